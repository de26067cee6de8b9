/**
 * The scrolling list of live comments, shared by the viewer page and the host's
 * moderation panel. Keeps to the newest comments and follows the bottom only
 * while the reader is already there, so scrolling back to read is not undone.
 */

import { h, replace } from './dom.js';
import { formatClock } from './format.js';

/** Distance from the bottom (px) that still counts as "reading the newest". */
const STICKY_PX = 48;

export class CommentList {
  /**
   * @param {HTMLElement} list an `<ol>`
   * @param {(comment: object) => (Node|null)} [actions] extra controls per comment
   */
  constructor(list, actions = () => null) {
    this.list = list;
    this.actions = actions;
  }

  reset(comments) {
    replace(this.list, comments.map((c) => this.item(c)));
    this.list.scrollTop = this.list.scrollHeight;
  }

  add(comment, dropped) {
    const atBottom = this.list.scrollHeight - this.list.scrollTop - this.list.clientHeight < STICKY_PX;
    if (dropped) this.remove(dropped.off);
    this.list.append(this.item(comment));
    if (atBottom) this.list.scrollTop = this.list.scrollHeight;
  }

  remove(off) {
    if (typeof off !== 'number') return;
    this.list.querySelector(`li[data-off="${off}"]`)?.remove();
  }

  item(comment) {
    const dataset = comment.off === null ? {} : { off: String(comment.off) };
    return h(
      'li',
      { class: 'comment', dataset },
      h('span', { class: 'comment-name', text: comment.name }),
      ' ',
      h('span', { class: 'comment-text', text: comment.text }),
      comment.ts ? h('time', { class: 'comment-time', text: formatClock(comment.ts) }) : null,
      this.actions(comment),
    );
  }
}
