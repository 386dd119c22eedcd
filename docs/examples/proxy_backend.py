"""A wshub proxy backend with nothing but Python's standard library.

Cookie sessions decide who connects, a membership rule who joins `team:*`,
a filter rewrites chat text, `sum` answers an rpc, and sessions are renewed
for an hour at a time. Run: python3 proxy_backend.py [port] (0: any free port;
the port is printed), and point wshub's [proxy.*] urls at it.
"""
import json
import os
import sys
import time
from http.cookies import SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = os.environ.get("WSHUB_PROXY_SECRET", "")  # = proxy.secret
SESSIONS = {"s3cr3t-alice": "alice", "s3cr3t-bob": "bob"}  # your session store
TEAM = {"alice"}  # who may join team:* rooms


def connect(req):
    cookie = SimpleCookie(req["headers"].get("cookie", ""))
    user = SESSIONS.get(cookie["session"].value) if "session" in cookie else None
    if user is None:
        return {"error": {"code": "login_required", "message": "log in first"}}
    return {"result": {"user": user, "info": {"name": user.title()},
                       "expire_at": int(time.time()) + 3600, "rooms": [f"inbox:{user}"]}}


def subscribe(req):
    if req["room"].startswith("team:") and req.get("user") not in TEAM:
        return {"error": {"code": "not_a_member", "message": "you are not in this team"}}
    return {"result": {}}


def publish(req):
    content = req["content"]
    if isinstance(content, dict) and content.get("text") == "/quit":
        return {"disconnect": {"code": 4000, "reason": "bye"}}
    if isinstance(content, dict) and isinstance(content.get("text"), str):
        return {"result": {"content": {**content, "text": content["text"].replace("darn", "d**n")}}}
    return {"result": {}}  # as sent


def rpc(req):
    if req["method"] == "sum":
        return {"result": {"data": sum(req["data"])}}
    return {"error": {"code": "no_such_method", "message": req["method"]}}


def refresh(req):
    return {"result": {"expire_at": int(time.time()) + 3600}}


HOOKS = {"/wshub/connect": connect, "/wshub/subscribe": subscribe,
         "/wshub/publish": publish, "/wshub/rpc": rpc, "/wshub/refresh": refresh}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: wshub reuses its connections

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        hook = HOOKS.get(self.path)
        if hook is None or self.headers.get("X-Wshub-Proxy-Secret", "") != SECRET:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        answer = json.dumps(hook(json.loads(body))).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 3000), Handler)
print(f"listening on 127.0.0.1:{server.server_address[1]}", flush=True)
server.serve_forever()
