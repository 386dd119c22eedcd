// The one error type the client rejects with: `code` is the server's error
// code (`forbidden`, `not_joined`, `rate_limited`, ...) or one of the
// client's own (`disconnected`, `closed`, `timeout`, `already_joined`,
// `unauthorized`); `reason` refines it when the server gave one.

export class WshubError extends Error {
  constructor(code, message, reason) {
    super(message || code);
    this.name = "WshubError";
    this.code = code;
    if (reason !== undefined) this.reason = reason;
  }
}
