#!/usr/bin/env python3
"""The outside world of Flow's examples, on one local port, with Python's standard library only.

    python3 examples/servers/example_systems.py [PORT]      # default 8711; 0 picks a free port

Prints `listening on http://127.0.0.1:PORT` once it accepts connections, logs one line per
request on stderr, and serves until it is killed. Every answer is a pure function of the
request (no randomness, no clock), so runs of the examples are reproducible. Where a real
system would use it, the `Idempotency-Key` header makes a repeated call return the first
answer instead of acting twice.

Endpoints (the `[tools.NAME]` sections of the repository's flow.toml point here):

  cargo_release.flow   POST /customs/check          the customs document check
                       POST /notify                 messages to the shipper
  kyc_review.flow      POST /compliance/screen      sanctions and PEP screening
                       POST /core/accounts          core banking opens an account
                       POST /mail                   mail to the customer
  support_triage.flow  GET  /crm/customers/history  the customer's history in the CRM
                       POST /helpdesk/reply         sends a reply
                       POST /incidents              opens an incident, pages on-call
  every llm tool       POST /v1/chat/completions    an OpenAI-compatible stub model

The model stub picks its answer by the tool name that the runtime sends as
`response_format.json_schema.name` and by the arguments it finds in the user message (the
runtime appends them to the prompt as `name: value` lines), and shapes it to the JSON Schema
it was sent. A document it "cannot read" gets an answer that is not JSON, as a real model's
apology would be. It never calls out: everything runs offline.
"""

import hashlib
import json
import re
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

# --------------------------------------------------------------------------------------------
# The systems' data
# --------------------------------------------------------------------------------------------

# Every document kind customs wants with a shipment.
REQUIRED_DOCS = ["bill_of_lading", "invoice", "certificate_of_origin"]

# When the customs checker ran: fixed, so that answers are reproducible.
CHECKED_AT = "2026-11-23T08:00:00Z"

# The sanctions list and the politically exposed persons the screening knows.
SANCTIONED = {
    "viktor sokolov": "EU consolidated list: SOKOLOV, Viktor (2014/145)",
}
PEPS = {"marta lindqvist"}

# The CRM: customer id -> history. An unknown customer is a 404.
CUSTOMERS = {
    "C-100": {
        "plan": "enterprise",
        "open_tickets": 1,
        "last_contact": "2026-11-20T09:30:00Z",
        "notes": ["Key account: reply within 4 hours", "Prefers email"],
    },
    "C-200": {
        "plan": "team",
        "open_tickets": 0,
        "last_contact": "2026-10-02T14:05:00Z",
        "notes": [],
    },
    "C-300": {
        "plan": "starter",
        "open_tickets": 5,
        "last_contact": None,
        "notes": ["Asked about upgrading in October"],
    },
}

# Identity documents the model "reads", by a word in the file name. The file name is the
# only thing a real model would see too (in the prompt), so the answer depends on it alone.
IDENTITY_DOCS = [
    (
        "passport-lena",
        {
            "full_name": "Lena Fischer",
            "birth_year": 1991,
            "nationality": "DE",
            "document_number": "C01X00T47",
            "expires": 2031,
        },
    ),
    (
        "idcard-jonas",
        {
            "full_name": "Jonas Berg",
            "birth_year": 1984,
            "nationality": "SE",
            "document_number": "SE8841207",
            "address": {"street": "Storgatan 12", "city": "Uppsala", "country": "SE"},
            "expires": 2029,
        },
    ),
    (
        "passport-viktor",
        {
            "full_name": "Viktor Sokolov",
            "birth_year": 1969,
            "nationality": "CY",
            "document_number": "K00451923",
            "address": {"street": None, "city": "Limassol", "country": "CY"},
            "expires": 2030,
        },
    ),
    (
        "passport-old",
        {
            "full_name": "Paul Martin",
            "birth_year": 1975,
            "nationality": "FR",
            "document_number": "09AB12345",
            "expires": 2019,
        },
    ),
]

# What a model says when it cannot read a scan: not JSON at all.
UNREADABLE = "I'm sorry, the image is too blurry for me to read any of the fields."

# --------------------------------------------------------------------------------------------
# Tool endpoints: each takes the JSON body (or the query, for GET) and returns
# (status, JSON value).
# --------------------------------------------------------------------------------------------


def customs_check(args):
    docs = args.get("docs")
    if not isinstance(docs, list):
        return 400, {"error": "`docs` must be a list of documents"}
    kinds = [d.get("kind") for d in docs if isinstance(d, dict)]
    anomalies = []
    for kind in REQUIRED_DOCS:
        if kind not in kinds:
            anomalies.append("missing %s" % kind)
    for doc in docs:
        if not isinstance(doc, dict):
            continue
        url = str(doc.get("url", ""))
        if not url.startswith("https://"):
            anomalies.append("document %s is not on the document store" % doc.get("id"))
        if doc.get("kind") not in REQUIRED_DOCS + ["packing_list"]:
            anomalies.append("document %s: unknown kind %s" % (doc.get("id"), doc.get("kind")))
    return 200, {"ok": not anomalies, "anomalies": anomalies, "checked_at": CHECKED_AT}


def notify(args):
    if not args.get("shipment") or not args.get("message"):
        return 400, {"error": "`shipment` and `message` are required"}
    return 200, True


def screen(args):
    name = str(args.get("name", "")).strip().lower()
    if not name:
        return 400, {"error": "`name` is required"}
    hits = [SANCTIONED[name]] if name in SANCTIONED else []
    return 200, {"hits": hits, "pep": name in PEPS}


def open_account(args):
    customer = args.get("customer_id")
    document = args.get("document_number")
    if not customer or not document:
        return 400, {"error": "`customer_id` and `document_number` are required"}
    # The account number is derived from the customer: opening it twice gives the same one.
    digits = int(hashlib.sha256(customer.encode()).hexdigest()[:8], 16) % 10**8
    return 200, {"number": "DE89 3704 0044 %04d %04d 00" % (digits // 10**4, digits % 10**4)}


def mail(args):
    if not args.get("customer_id") or not args.get("subject"):
        return 400, {"error": "`customer_id` and `subject` are required"}
    return 200, True


def customer_history(args):
    customer = args.get("customer_id")
    if not customer:
        return 400, {"error": "query parameter `customer_id` is required"}
    if customer not in CUSTOMERS:
        return 404, {"error": "no customer %s in the CRM" % customer}
    return 200, CUSTOMERS[customer]


def helpdesk_reply(args):
    ticket = args.get("ticket_id")
    if not ticket or not args.get("body"):
        return 400, {"error": "`ticket_id` and `body` are required"}
    return 200, "msg-%s" % ticket


def incidents(args):
    ticket = args.get("ticket_id")
    if not ticket or not args.get("summary"):
        return 400, {"error": "`ticket_id` and `summary` are required"}
    return 200, "INC-%s" % ticket


ROUTES = {
    ("POST", "/customs/check"): customs_check,
    ("POST", "/notify"): notify,
    ("POST", "/compliance/screen"): screen,
    ("POST", "/core/accounts"): open_account,
    ("POST", "/mail"): mail,
    ("GET", "/crm/customers/history"): customer_history,
    ("POST", "/helpdesk/reply"): helpdesk_reply,
    ("POST", "/incidents"): incidents,
}

# --------------------------------------------------------------------------------------------
# The model stub
# --------------------------------------------------------------------------------------------


def words(text):
    return set(re.findall(r"[a-z0-9]+", text.lower()))


def classify(args, text):
    """Urgency of a ticket, by the words of its subject and body."""
    subject = str(args.get("subject", ""))
    ticket = "%s %s" % (subject, args.get("body", "")) if args else text
    w = words(ticket)
    if w & {"down", "outage", "unreachable"} or "data loss" in ticket.lower():
        return {"Critical": {"summary": subject or "production outage"}}
    if w & {"error", "fails", "failing", "broken", "crash", "crashes"}:
        return "High"
    if w & {"unsubscribe", "thanks", "auto", "spam"}:
        return "Ignore"
    return "Normal"


def draft_reply(args, text):
    """A short reply to the ticket, friendlier for enterprise customers."""
    ticket = args.get("ticket") if isinstance(args.get("ticket"), dict) else {}
    history = args.get("history") if isinstance(args.get("history"), dict) else {}
    subject = ticket.get("subject") or "your request"
    greeting = "Thanks for reaching out"
    if history.get("plan") == "enterprise":
        greeting = "Thanks for reaching out, and for being with us on the Enterprise plan"
    return {
        "subject": "Re: %s" % subject,
        "body": "%s. We are looking into \"%s\" and will write again as soon as we know more."
        % (greeting, subject),
        "confidence": 0.82 if ticket else 0.4,
    }


def extract_identity(args, text):
    """The fields of the identity document named in the prompt, or None if unreadable."""
    where = str(args.get("file_url", text))
    for key, doc in IDENTITY_DOCS:
        if key in where:
            return doc
    return None


MODEL_ANSWERS = {
    "classify": classify,
    "draft_reply": draft_reply,
    "extract_identity": extract_identity,
}


def prompt_arguments(text):
    """The tool's arguments as the runtime renders them after the prompt, one `name: value`
    line each (objects and lists as JSON)."""
    args = {}
    for line in text.splitlines():
        m = re.match(r"^([A-Za-z_][A-Za-z0-9_]*): (.*)$", line)
        if not m:
            continue
        value = m.group(2)
        if value[:1] in "[{":
            try:
                value = json.loads(value)
            except ValueError:
                pass
        args[m.group(1)] = value
    return args


def fit(value, schema):
    """Shapes a canned answer to the schema the runtime sent: drops `null` fields that the
    schema does not require, and wraps the value when the schema is an object with one
    property that the value is not (a runtime may wrap a non-object type that way)."""
    if not isinstance(schema, dict):
        return value
    if schema.get("type") == "object" and isinstance(schema.get("properties"), dict):
        props = schema["properties"]
        if isinstance(value, dict) and set(value) <= set(props):
            required = set(schema.get("required", []))
            return {
                k: fit(v, props[k])
                for k, v in value.items()
                if v is not None or k in required
            }
        if len(props) == 1 and not (isinstance(value, dict) and set(value) <= set(props)):
            (name, inner), = props.items()
            return {name: fit(value, inner)}
    if isinstance(value, dict):
        for key in ("anyOf", "oneOf"):
            for choice in schema.get(key, []):
                if isinstance(choice, dict) and choice.get("type") == "object":
                    props = choice.get("properties", {})
                    if set(value) <= set(props):
                        return fit(value, choice)
    return value


def chat_completions(body):
    """An OpenAI-compatible chat completion: (status, response)."""
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
        return 400, {"error": {"message": "`messages` must be a list", "type": "invalid_request_error"}}
    fmt = body.get("response_format") or {}
    spec = fmt.get("json_schema") or {}
    tool = spec.get("name", "")
    schema = spec.get("schema", {})
    # What the user asks: the system message only repeats the schema.
    text = "\n".join(
        m.get("content", "") if isinstance(m.get("content"), str) else json.dumps(m.get("content"))
        for m in body["messages"]
        if isinstance(m, dict) and m.get("role") == "user"
    )
    answer = MODEL_ANSWERS.get(tool)
    if answer is None:
        return 400, {
            "error": {
                "message": "the example model knows no tool %r (response_format.json_schema.name)" % tool,
                "type": "invalid_request_error",
            }
        }
    value = answer(prompt_arguments(text), text)
    content = UNREADABLE if value is None else json.dumps(fit(value, schema))
    prompt_tokens = len(text.split())
    return 200, {
        "id": "chatcmpl-" + hashlib.sha256(text.encode()).hexdigest()[:16],
        "object": "chat.completion",
        "created": 1795420800,
        "model": body.get("model", "example"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(content.split()),
            "total_tokens": prompt_tokens + len(content.split()),
        },
    }


# --------------------------------------------------------------------------------------------
# HTTP
# --------------------------------------------------------------------------------------------

# Idempotency-Key -> (status, body bytes) of the first answer: a repeated call (a retry after
# a crash) gets the same answer and acts only once.
SEEN = {}
SEEN_LOCK = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    server_version = "FlowExampleSystems/1"
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        self.handle_call("GET")

    def do_POST(self):
        self.handle_call("POST")

    def do_PUT(self):
        self.handle_call("PUT")

    def do_PATCH(self):
        self.handle_call("PATCH")

    def do_DELETE(self):
        self.handle_call("DELETE")

    def handle_call(self, method):
        url = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        key = self.headers.get("Idempotency-Key")
        if key:
            with SEEN_LOCK:
                seen = SEEN.get((method, url.path, key))
            if seen is not None:
                self.log_call(method, url.path, key, seen[0], "(repeat)")
                self.reply(seen[0], seen[1])
                return

        if method == "GET":
            args = {k: v[-1] for k, v in parse_qs(url.query).items()}
        else:
            try:
                args = json.loads(raw.decode("utf-8")) if raw else {}
            except (UnicodeDecodeError, ValueError) as e:
                self.log_call(method, url.path, key, 400, "")
                self.reply(400, json.dumps({"error": "the body is not JSON: %s" % e}).encode())
                return
        if url.path == "/v1/chat/completions" and method == "POST":
            status, value = chat_completions(args)
        elif (method, url.path) in ROUTES:
            if not isinstance(args, dict):
                status, value = 400, {"error": "the body must be a JSON object"}
            else:
                status, value = ROUTES[(method, url.path)](args)
        elif any(path == url.path for _, path in ROUTES):
            status, value = 405, {"error": "%s is not allowed on %s" % (method, url.path)}
        else:
            status, value = 404, {"error": "no endpoint %s %s" % (method, url.path)}
        body = json.dumps(value).encode()
        if key and status < 500:
            with SEEN_LOCK:
                SEEN[(method, url.path, key)] = (status, body)
        self.log_call(method, url.path, key, status, "")
        self.reply(status, body)

    def reply(self, status, body):
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_call(self, method, path, key, status, note):
        sys.stderr.write(
            "%s %s -> %d%s%s\n"
            % (method, path, status, " key=" + key if key else "", " " + note if note else "")
        )
        sys.stderr.flush()

    def log_message(self, format, *args):
        # The default access log is replaced by log_call.
        pass


def main(argv):
    if len(argv) > 2 or (len(argv) == 2 and not argv[1].isdigit()):
        sys.stderr.write("usage: python3 %s [PORT]   (default 8711; 0 picks a free port)\n" % argv[0])
        return 2
    port = int(argv[1]) if len(argv) == 2 else 8711
    try:
        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    except OSError as e:
        sys.stderr.write("cannot listen on 127.0.0.1:%d: %s\n" % (port, e))
        return 1
    server.daemon_threads = True
    print("listening on http://127.0.0.1:%d" % server.server_address[1], flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
