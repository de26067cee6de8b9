/**
 * Building elements without innerHTML: every string becomes a text node or an
 * attribute value, so names and messages from other users can never become markup.
 */

/**
 * Create an element.
 * @param {string} tag
 * @param {object} [props] `class`, `text`, `on: {event: fn}`, `dataset`, DOM
 *   properties that exist on the element (e.g. `type`, `disabled`, `value`),
 *   anything else as an attribute (e.g. `aria-label`, `for`; `false` leaves it out)
 * @param {...(Node|string|number|null|false)} children
 */
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (key === 'class') node.className = value;
    else if (key === 'text') node.textContent = String(value);
    else if (key === 'on') for (const [event, fn] of Object.entries(value)) node.addEventListener(event, fn);
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key in node && !key.includes('-')) node[key] = value;
    else if (value !== false) node.setAttribute(key, value === true ? '' : String(value));
  }
  append(node, ...children);
  return node;
}

export function append(parent, ...children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    parent.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return parent;
}

/** Replace all children. */
export function replace(parent, ...children) {
  parent.replaceChildren();
  return append(parent, ...children);
}

/** A label and an input bound by id, the pattern for every form field. */
export function field(label, input, hint) {
  const hintNode = hint ? h('small', { class: 'hint', text: hint }) : null;
  return h('div', { class: 'field' }, h('label', { for: input.id, text: label }), input, hintNode);
}

/** Text shown in an inline message slot (role=alert/status is on the slot itself). */
export function say(node, text, kind = 'error') {
  node.textContent = text || '';
  node.dataset.kind = kind;
  node.hidden = !text;
}

/**
 * Short notices in the page-wide `#toast` region. Bursts (a flash sale's
 * "just bought" stream) are capped: at most `limit` wait, the rest are dropped.
 */
export class Toaster {
  constructor(region, { showMs = 3500, limit = 4 } = {}) {
    this.region = region;
    this.showMs = showMs;
    this.limit = limit;
    this.queue = [];
    this.timer = null;
  }

  show(text, kind = 'info') {
    if (this.queue.length >= this.limit) return;
    this.queue.push({ text, kind });
    if (this.timer === null) this.next();
  }

  next() {
    const item = this.queue.shift();
    if (!item) {
      this.timer = null;
      this.region.hidden = true;
      this.region.textContent = '';
      return;
    }
    this.region.textContent = item.text;
    this.region.dataset.kind = item.kind;
    this.region.hidden = false;
    this.timer = setTimeout(() => this.next(), this.showMs);
  }
}
