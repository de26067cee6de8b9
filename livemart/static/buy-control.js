/**
 * The buy button of a sale with its status line: it knows when the sale can be
 * bought (started, not ended, stock left, signed in), runs reserve-then-confirm,
 * and keeps a hold whose payment failed so the buyer can retry or release it.
 */

import { confirm, release, reserve } from './checkout.js';
import { h, say } from './dom.js';
import { errorText } from './errors.js';
import { formatCountdown, parseTime } from './format.js';
import { TRANSIENT_CODES } from './protocol.js';
import { remainingOf } from './room-model.js';

export class BuyControl {
  /**
   * @param {object} options
   * @param {object} options.api
   * @param {boolean} options.signedIn
   * @param {string} options.source reservation source (`room` or `group`)
   * @param {string} [options.idPrefix] gives the parts stable ids (`buy` -> `#buy-button`)
   * @param {HTMLInputElement} [options.quantityInput] quantity field; 1 without one
   * @param {(text: string) => void} options.onOrder told when an order is placed
   * @param {() => void} options.onSignIn a guest pressed the button
   */
  constructor({ api, signedIn, source, idPrefix, quantityInput, onOrder, onSignIn }) {
    this.api = api;
    this.signedIn = signedIn;
    this.source = source;
    this.quantityInput = quantityInput ?? null;
    this.onOrder = onOrder;
    this.onSignIn = onSignIn;
    this.sale = null;
    this.title = '';
    /** A reservation that is held but not yet paid. */
    this.held = null;
    this.busy = false;
    const id = (part) => (idPrefix ? `${idPrefix}-${part}` : undefined);
    this.button = h('button', { id: id('button'), type: 'button', class: 'buy', on: { click: () => this.buy() } });
    this.retryButton = h('button', { id: id('retry'), type: 'button', class: 'secondary', text: 'Retry payment', hidden: true, on: { click: () => this.pay() } });
    this.releaseButton = h('button', { id: id('release'), type: 'button', class: 'secondary', text: 'Release', hidden: true, on: { click: () => this.giveBack() } });
    this.status = h('p', { id: id('status'), class: 'buy-status', role: 'status', hidden: true });
    this.root = h('div', { class: 'buy-control' }, this.button, h('div', { class: 'row' }, this.retryButton, this.releaseButton), this.status);
    this.refresh();
  }

  /** Show another sale (or the same one with new stock). */
  setSale(sale, title) {
    this.sale = sale;
    this.title = title;
    this.refresh();
  }

  /** Recompute the label; called on stock changes and every countdown tick. */
  refresh(now = Date.now()) {
    if (this.held) {
      const left = (parseTime(this.held.expires_at) ?? now) - now;
      if (left <= 0) this.dropHold('Your hold expired before payment.');
      else say(this.status, `Held for you for ${formatCountdown(left)}; payment did not go through yet.`, 'warning');
    }
    if (this.busy) return;
    const [label, enabled] = this.availability(now);
    this.button.textContent = label;
    this.button.disabled = !enabled || this.held !== null;
  }

  availability(now) {
    const sale = this.sale;
    if (!sale) return ['Not on sale', false];
    const startsAt = parseTime(sale.starts_at);
    const endsAt = parseTime(sale.ends_at);
    if (startsAt !== null && startsAt > now) return [`Starts in ${formatCountdown(startsAt - now)}`, false];
    if (endsAt !== null && endsAt <= now) return ['Sale ended', false];
    if (remainingOf(sale) === 0) return ['Sold out', false];
    if (!this.signedIn) return ['Sign in to buy', true];
    return ['Buy now', true];
  }

  quantity() {
    const value = this.quantityInput ? Number.parseInt(this.quantityInput.value, 10) : 1;
    return Number.isInteger(value) && value > 0 ? value : 1;
  }

  async buy() {
    if (!this.sale || this.busy) return;
    if (!this.signedIn) {
      this.onSignIn();
      return;
    }
    this.setBusy('Reserving…');
    try {
      this.held = await reserve(this.api, this.sale.id, { quantity: this.quantity(), source: this.source });
    } catch (error) {
      this.finish(errorText(error), 'error');
      return;
    }
    await this.pay();
  }

  async pay() {
    const held = this.held;
    if (!held) return;
    this.setBusy('Paying…');
    try {
      await confirm(this.api, held.id);
      this.held = null;
      const text = `Order placed: ${held.quantity ?? this.quantity()} × ${this.title || 'item'}`;
      this.finish(text, 'success');
      this.onOrder(text);
    } catch (error) {
      if (TRANSIENT_CODES.has(error.code)) {
        this.finish('', 'warning');
      } else {
        this.held = null;
        this.finish(errorText(error), 'error');
      }
    }
  }

  async giveBack() {
    const held = this.held;
    if (!held) return;
    this.setBusy('Releasing…');
    try {
      await release(this.api, held.id);
      this.held = null;
      this.finish('Released; the item went back on sale.', 'info');
    } catch (error) {
      this.finish(errorText(error), 'error');
    }
  }

  dropHold(text) {
    this.held = null;
    say(this.status, text, 'error');
    this.showHoldButtons();
  }

  setBusy(label) {
    this.busy = true;
    this.button.textContent = label;
    this.button.disabled = true;
    this.retryButton.disabled = true;
    this.releaseButton.disabled = true;
    this.button.setAttribute('aria-busy', 'true');
  }

  finish(text, kind) {
    this.busy = false;
    this.button.removeAttribute('aria-busy');
    this.retryButton.disabled = false;
    this.releaseButton.disabled = false;
    say(this.status, text, kind);
    this.showHoldButtons();
    this.refresh();
  }

  showHoldButtons() {
    this.retryButton.hidden = this.held === null;
    this.releaseButton.hidden = this.held === null;
  }
}
