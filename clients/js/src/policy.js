// What the client does after a connection ends: the close-code table of
// docs/protocol.md ("What a client does after a close"), in code.

/** Backoff with full jitter: min + random(0, min(max, min * 2^attempt)), at most max. */
export function backoffDelay(attempt, minMs, maxMs, random = Math.random) {
  const step = Math.min(attempt, 31);
  const ceiling = Math.min(maxMs, minMs * 2 ** step);
  return Math.min(maxMs, Math.round(minMs + random() * ceiling));
}

/** The HTTP status of a refused upgrade, where the WebSocket implementation reveals it (Node `ws` does; browsers never do). */
export function refusedStatus(errorText) {
  const match = /Unexpected server response: (\d{3})/.exec(errorText || "");
  return match ? Number(match[1]) : undefined;
}

/**
 * Decides after a close: `{ final: true }` ends the client (state `closed`);
 * otherwise it reconnects (`hinted`: at the server's `reconnect_after_ms`).
 *
 * @param {{code: number, reason: string, status?: number, canRefreshToken: boolean, hintMs?: number}} ended
 */
export function afterClose({ code, status, canRefreshToken, hintMs }) {
  if (status === 401) {
    return canRefreshToken ? { final: false } : { final: true, why: "unauthorized" };
  }
  if (status === 403) return { final: true, why: "forbidden" };
  if (code === 4001) {
    return canRefreshToken ? { final: false } : { final: true, why: "token_expired" };
  }
  // Backends pick 4500-4999 to say "do not come back" (banned, logged out).
  if (code >= 4500 && code <= 4999) return { final: true, why: "disconnected" };
  if (code === 1001 && hintMs !== undefined) return { final: false, hintMs };
  return { final: false };
}
