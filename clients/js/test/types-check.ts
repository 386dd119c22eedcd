// Compiled with `tsc --noEmit` by types.test.js: the declarations describe the
// surface the README documents, and reject what the runtime would refuse.
import WshubDefault, { WshubClient, WshubError, type JoinedInfo, type Message, type Subscription } from "wshub-client";

declare const NodeWs: new (url: string, protocols?: string | string[]) => {
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onmessage: ((event: { data: unknown }) => void) | null;
  onerror: ((event: unknown) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
};

async function usage(): Promise<void> {
  const hub = new WshubClient("ws://127.0.0.1:8080/ws", {
    WebSocket: NodeWs,
    getToken: async () => "jwt",
    minReconnectDelayMs: 500,
    maxReconnectDelayMs: 20_000,
  });
  const same: WshubClient = new WshubDefault("ws://x");
  void same;
  hub.on("state", (state) => {
    const known: "connecting" | "connected" | "disconnected" | "closed" = state;
    void known;
  });
  hub.on("disconnected", (info) => void (info.reconnectInMs + info.code));
  const welcome = await hub.connect();
  const id: string = welcome.id;
  void id;
  const sub: Subscription<{ text: string }> = await hub.join<{ text: string }>(
    "chat:1",
    (message: Message<{ text: string }>) => void message.content.text.toUpperCase(),
    { recover: true },
  );
  const first: JoinedInfo | undefined = sub.joined;
  void first;
  sub.on("joined", (info) => {
    if (info.recovered === false) void info.epoch;
  });
  await sub.publish({ text: "hi" });
  const history = await hub.history("chat:1", { limit: 10 });
  void history.messages[0]?.offset;
  const presence = await hub.presence("chat:1");
  void presence.members[0]?.id;
  await sub.leave();
  try {
    await hub.publish("chat:1", 1);
  } catch (err) {
    if (err instanceof WshubError) void err.code;
  }
  hub.close();

  // @ts-expect-error: states are a closed set
  hub.on("state", (state: "open") => void state);
  // @ts-expect-error: an unknown event
  hub.on("opened", () => {});
  // @ts-expect-error: content must be JSON
  await sub.publish(() => 1);
  // @ts-expect-error: join needs a handler
  await hub.join("chat:2");
}
void usage;
