/** Mutex serialises async sections: one runs at a time, in call order. */
export class Mutex {
  private tail: Promise<void> = Promise.resolve();

  /** run waits for the sections before it, then runs fn. */
  run<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.tail.then(fn);
    this.tail = result.then(
      () => undefined,
      () => undefined,
    );
    return result;
  }
}
