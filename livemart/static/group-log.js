/**
 * A group conversation's messages ordered by server `seq`, each kept once however
 * it arrived (history page, live push, recovery, own send acknowledgement), and
 * the bookkeeping that tells when a hole below a live message must be fetched.
 */

export class MessageLog {
  constructor() {
    /** seq -> message */
    this.bySeq = new Map();
    /** Every seq up to here has been seen or fetched; holes below it are settled. */
    this.contiguous = 0;
  }

  get size() {
    return this.bySeq.size;
  }

  get highest() {
    let top = 0;
    for (const seq of this.bySeq.keys()) if (seq > top) top = seq;
    return Math.max(top, this.contiguous);
  }

  get lowest() {
    let low = null;
    for (const seq of this.bySeq.keys()) if (low === null || seq < low) low = seq;
    return low;
  }

  /** Start over, e.g. after the server could not recover a gap. */
  reset(contiguous = 0) {
    this.bySeq.clear();
    this.contiguous = contiguous;
  }

  /** Add a message; false when it is already here or has no usable seq. */
  add(message) {
    const seq = message && message.seq;
    if (!Number.isInteger(seq) || seq <= 0 || this.bySeq.has(seq)) return false;
    this.bySeq.set(seq, message);
    if (seq === this.contiguous + 1) this.advance();
    return true;
  }

  /** Record that history up to `seq` has been fetched, whatever holes it had. */
  settledUpTo(seq) {
    if (seq > this.contiguous) this.contiguous = seq;
    this.advance();
  }

  /** The `after` to fetch when seqs below `seq` are missing, else null. */
  gapBelow(seq) {
    return seq > this.contiguous + 1 ? this.contiguous : null;
  }

  /** The seq of the message a new one with `seq` goes before, or null for the end. */
  successorOf(seq) {
    let next = null;
    for (const other of this.bySeq.keys()) if (other > seq && (next === null || other < next)) next = other;
    return next;
  }

  ordered() {
    return [...this.bySeq.values()].sort((a, b) => a.seq - b.seq);
  }

  advance() {
    while (this.bySeq.has(this.contiguous + 1)) this.contiguous += 1;
  }
}
