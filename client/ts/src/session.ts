/**
 * Session is one server session: its credentials, its request numbering and
 * what the client knows of its lease.
 */
export class Session {
  private next = 1n; // the next sequence number to hand out
  private readonly inflight = new Set<bigint>(); // numbers whose final answer is not known
  private expired = false;
  private aliveAt: number; // when the last request that proved the lease was sent

  constructor(
    readonly id: bigint,
    readonly secret: string,
    public leaseMs: number,
    sentAt: number,
  ) {
    this.aliveAt = sentAt;
  }

  /** begin hands out the next sequence number and counts it as in flight. */
  begin(): bigint {
    const seq = this.next++;
    this.inflight.add(seq);
    return seq;
  }

  /**
   * end records that the client needs no more answers for seq: it has the
   * final one, or it gave the request up and will never repeat it.
   */
  end(seq: bigint): void {
    this.inflight.delete(seq);
  }

  /**
   * ackedBelow is the acknowledgement sent with every request: the lowest
   * sequence number still in flight, or the next one when none is. The server
   * may forget the answers below it.
   */
  ackedBelow(): bigint {
    let low = this.next;
    for (const seq of this.inflight) {
      if (seq < low) {
        low = seq;
      }
    }
    return low;
  }

  /** renewed records a keepalive answer to a request sent at sentAt. */
  renewed(sentAt: number, leaseMs: number): void {
    if (leaseMs > 0) {
      this.leaseMs = leaseMs;
    }
    this.aliveAt = Math.max(this.aliveAt, sentAt);
  }

  /** silentFor is how long ago the last request that proved the lease was sent. */
  silentFor(now: number): number {
    return now - this.aliveAt;
  }

  markExpired(): void {
    this.expired = true;
  }

  isExpired(): boolean {
    return this.expired;
  }
}
