// A wshub proxy backend with nothing but Node's standard library: the same
// rules as proxy_backend.py. Run: node proxy_backend.mjs [port] (0: any
// free port; the port is printed), and point wshub's [proxy.*] urls at it.
import { createServer } from "node:http";

const SECRET = process.env.WSHUB_PROXY_SECRET ?? ""; // = proxy.secret
const SESSIONS = { "s3cr3t-alice": "alice", "s3cr3t-bob": "bob" }; // your session store
const TEAM = new Set(["alice"]); // who may join team:* rooms
const hour = () => Math.floor(Date.now() / 1000) + 3600;

const hooks = {
  "/wshub/connect": (req) => {
    const session = /(?:^|;\s*)session=([^;]*)/.exec(req.headers.cookie ?? "")?.[1];
    const user = SESSIONS[session];
    if (!user) return { error: { code: "login_required", message: "log in first" } };
    const name = user[0].toUpperCase() + user.slice(1);
    return { result: { user, info: { name }, expire_at: hour(), rooms: [`inbox:${user}`] } };
  },
  "/wshub/subscribe": (req) =>
    req.room.startsWith("team:") && !TEAM.has(req.user)
      ? { error: { code: "not_a_member", message: "you are not in this team" } }
      : { result: {} },
  "/wshub/publish": ({ content }) => {
    if (content?.text === "/quit") return { disconnect: { code: 4000, reason: "bye" } };
    if (typeof content?.text === "string") {
      return { result: { content: { ...content, text: content.text.replaceAll("darn", "d**n") } } };
    }
    return { result: {} }; // as sent
  },
  "/wshub/rpc": ({ method, data }) =>
    method === "sum"
      ? { result: { data: data.reduce((a, b) => a + b, 0) } }
      : { error: { code: "no_such_method", message: method } },
  "/wshub/refresh": () => ({ result: { expire_at: hour() } }),
};

const server = createServer((request, response) => {
  let body = "";
  request.on("data", (chunk) => (body += chunk));
  request.on("end", () => {
    const hook = hooks[request.url];
    if (!hook || (request.headers["x-wshub-proxy-secret"] ?? "") !== SECRET) {
      response.writeHead(404).end();
      return;
    }
    const answer = JSON.stringify(hook(JSON.parse(body)));
    response.writeHead(200, { "Content-Type": "application/json" }).end(answer);
  });
});
server.listen(Number(process.argv[2] ?? 3000), "127.0.0.1", () => {
  console.log(`listening on 127.0.0.1:${server.address().port}`);
});
