// A small event emitter: `on` returns a function that removes the listener.
// A listener that throws never stops the others or the client; its error is
// reported through `report` (the client's "error" event).

export class Emitter {
  #listeners = new Map();
  #report;

  constructor(report) {
    this.#report = report;
  }

  on(event, listener) {
    if (typeof listener !== "function") {
      throw new TypeError(`listener for "${event}" must be a function`);
    }
    let set = this.#listeners.get(event);
    if (!set) {
      set = new Set();
      this.#listeners.set(event, set);
    }
    set.add(listener);
    return () => this.off(event, listener);
  }

  off(event, listener) {
    this.#listeners.get(event)?.delete(listener);
  }

  emit(event, ...args) {
    const set = this.#listeners.get(event);
    if (!set) return false;
    for (const listener of [...set]) {
      try {
        listener(...args);
      } catch (err) {
        if (event === "error" || !this.#report) {
          // Nowhere left to report it: surface it without breaking the loop.
          queueMicrotask(() => {
            throw err;
          });
        } else {
          this.#report(err);
        }
      }
    }
    return true;
  }
}
