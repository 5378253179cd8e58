"""A small OpenAI-protocol server for the tests (stdlib only), bound to 127.0.0.1.

    python openai_server.py            # prints "PORT <n>" on stdout, then serves until killed

Endpoints
    GET  /v1/models              the model list (["test-model"] unless set with "models")
    POST /v1/chat/completions    records generated deterministically (from a hash of the request body)
                                 from the JSON schema of ``response_format`` (json_schema), or, in JSON or
                                 plain-prompt mode, from the schema the prompt carries after
                                 "matches this JSON schema:"; a variation ``parent`` cycles over 1..p
    POST /v1/files               multipart upload (purpose=batch)
    GET  /v1/files/{id}          file object;  GET /v1/files/{id}/content: the bytes
    POST /v1/batches             create;  GET /v1/batches/{id}: retrieve (validating -> in_progress ->
                                 completed, one step per retrieve)
    GET  /_stats                 counters;  GET /_log: every request (path, status, body, time)
    POST /_control               merge failure modes (JSON);  POST /_reset: clear counters and modes

Failure modes (POST /_control), consumed by the next chat requests in order of arrival:
    {"rate_limit": {"count": n, "retry_after": s}}       429 with Retry-After: s
    {"server_error": {"count": n, "status": 500|503}}
    {"slow": {"count": n, "delay": s}}                   answer after s seconds (client timeouts)
    {"fail_always": 500}                                 every chat request fails with that status
    {"malformed": {"count": n}}                          200 with content that is not JSON
    {"schema_violation": {"count": n, "kinds": [...]}}   record i of the response breaks kinds[i]
    {"reject_formats": ["json_schema", ...]}             400 "response_format ... not supported"
    {"hang_after": k}                                    requests after the k-th one hang until reset
    {"batch_errors": {"count": n, "every": m}}           next n batches: every m-th line -> error file (500)
    {"batch_fail": {"count": n}}                         next n batches end "failed", without output
    {"batch_hold": true}                                 batches stay in_progress until released

Endpoint modes (POST /_control), for the preflight and for an endpoint that goes away:
    {"api_key": "sk-..."}          every /v1 request with another (or no) bearer key: 401, its message
                                   showing the key masked as OpenAI does ("sk-a****wxyz")
    {"models": ["a", "b"]}         GET /v1/models lists these, and chat requests for another model: 404
                                   (without it the list is ["test-model"] and any model is served, as
                                   llama-server does)
    {"models_route": false}        GET /v1/models: 404, as on servers without the list
    {"die_after": k}               the chat request after the k-th one makes the server process exit
                                   without answering: later connections are refused
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SCHEMA_IN_PROMPT = re.compile(r"matches this JSON schema:\s*```json\s*(\{.*?\})\s*```", re.DOTALL)


class State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.release = threading.Event()
        self.reset()

    def reset(self) -> None:
        self.release.set()  # wake every hanging request of the previous test
        self.release = threading.Event()
        self.control: dict = {}
        self.stats = {
            "chat": 0,
            "chat_ok": 0,
            "chat_by_status": {},
            "hanging": 0,
            "files_uploaded": 0,
            "batches_created": 0,
            "batch_retrieves": 0,
            "batch_lines": 0,
        }
        self.log: list[dict] = []
        self.files: dict[str, dict] = {}
        self.batches: dict[str, dict] = {}
        self.counter = 0

    def next_id(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}-{self.counter:05d}"

    def take(self, name: str) -> dict | None:
        """Consume one use of a counted failure mode."""
        mode = self.control.get(name)
        if not mode or mode.get("count", 0) <= 0:
            return None
        mode["count"] -= 1
        return mode


STATE = State()


# ---------------------------------------------------------------------------------------- generation


def _nullable(schema: dict) -> tuple[dict, bool]:
    if "anyOf" in schema:
        branches = [b for b in schema["anyOf"] if b.get("type") != "null"]
        return branches[0], len(branches) < len(schema["anyOf"])
    return schema, False


def generate(schema: dict, rng: random.Random, *, index: int = 0, parents: int | None = None):
    if "anyOf" in schema:
        inner, nullable = _nullable(schema)
        if nullable and rng.random() < 0.25:
            return None
        return generate(inner, rng, index=index, parents=parents)
    if "enum" in schema:
        return rng.choice(schema["enum"])
    kind = schema.get("type")
    if kind == "object":
        out = {}
        for name, sub in schema.get("properties", {}).items():
            if name == "parent" and "maximum" in sub:
                out[name] = index % int(sub["maximum"]) + 1
            else:
                out[name] = generate(sub, rng, index=index)
        return out
    if kind == "array":
        count = schema.get("minItems", 3)
        return [generate(schema["items"], rng, index=i) for i in range(count)]
    if kind == "integer":
        return rng.randint(int(schema.get("minimum", 0)), int(schema.get("maximum", 100)))
    if kind == "number":
        return round(rng.uniform(schema.get("minimum", 0.0), schema.get("maximum", 100.0)), 3)
    if kind == "string":
        return "text"
    if kind == "boolean":
        return rng.random() < 0.5
    return None


def _properties(schema: dict) -> dict:
    return schema["properties"]["records"]["items"]["properties"]


def corrupt(record: dict, kind: str, properties: dict) -> None:
    """Break one record in the named way (the client must reject it with that reason)."""
    plain = [(n, *_nullable(s)) for n, s in properties.items() if n != "parent"]
    if kind == "out_of_bounds":
        name, inner, _ = next(p for p in plain if "maximum" in p[1])
        record[name] = inner["maximum"] + 1000
    elif kind == "unknown_category":
        name = next(p[0] for p in plain if "enum" in p[1])
        record[name] = "zzz-not-a-category"
    elif kind == "null_in_non_nullable":
        name = next(p[0] for p in plain if not p[2])
        record[name] = None
    elif kind == "non_integer":
        name, inner, _ = next(p for p in plain if p[1].get("type") == "integer")
        record[name] = inner.get("minimum", 0) + 0.5
    elif kind == "not_a_number":
        name = next(p[0] for p in plain if p[1].get("type") in ("integer", "number"))
        record[name] = "abc"
    elif kind == "wrong_columns":
        record.pop(plain[0][0])
    elif kind == "bad_parent":
        record["parent"] = 999
    else:
        raise ValueError(kind)


def response_schema(body: dict) -> tuple[dict | None, str]:
    response_format = body.get("response_format") or {}
    if response_format.get("type") == "json_schema":
        return response_format["json_schema"]["schema"], "json_schema"
    mode = "json_object" if response_format.get("type") == "json_object" else "prompt"
    for message in body.get("messages", []):
        match = SCHEMA_IN_PROMPT.search(message.get("content") or "")
        if match:
            return json.loads(match.group(1)), mode
    return None, mode


def completion(body: dict, *, batch: bool = False) -> tuple[int, dict, dict]:
    """(status, json, headers) of one chat completion request."""
    state = STATE
    format_type = (body.get("response_format") or {}).get("type", "text")
    with state.lock:
        control = state.control
        if format_type in control.get("reject_formats", ()):
            return 400, _error(f"response_format of type {format_type} is not supported by this server"), {}
        if not batch:
            if control.get("fail_always"):
                return int(control["fail_always"]), _error("the server is down"), {}
            mode = state.take("rate_limit")
            if mode:
                return 429, _error("Rate limit reached"), {"Retry-After": str(mode.get("retry_after", 0.1))}
            mode = state.take("server_error")
            if mode:
                return int(mode.get("status", 500)), _error("internal error"), {}
        slow = state.take("slow") if not batch else None
        malformed = state.take("malformed")
        violation = state.take("schema_violation")
    if slow:
        time.sleep(float(slow.get("delay", 1.0)))
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    rng = random.Random(int(hashlib.sha256(canonical.encode()).hexdigest()[:16], 16))
    schema, mode = response_schema(body)
    if schema is None:
        content = "I can only answer with prose."
    else:
        value = generate(schema, rng)
        if violation:
            for record, kind in zip(value["records"], violation.get("kinds", []), strict=False):
                corrupt(record, kind, _properties(schema))
        content = json.dumps(value)
        if mode == "prompt":
            content = f"Here are the records you asked for:\n```json\n{content}\n```\nEnjoy."
    if malformed:
        content = content[: len(content) // 2] + ' ,,, "unterminated'
    prompt_tokens = len(json.dumps(body.get("messages", []))) // 4
    answer = {
        "id": f"chatcmpl-{hashlib.sha256(canonical.encode()).hexdigest()[:12]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", "unknown"),
        "system_fingerprint": "fp_test",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(content) // 4,
            "total_tokens": prompt_tokens + len(content) // 4,
        },
    }
    return 200, answer, {}


def _error(message: str, code: str | None = None) -> dict:
    return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}


def _masked(key: str) -> str:
    return key[:3] + "*" * max(len(key) - 7, 0) + key[-4:] if len(key) > 7 else "***"


def refusal(authorization: str | None, model: str | None) -> tuple[int, dict] | None:
    """401 for a wrong or missing key, 404 for a model the server does not serve, when those modes are set."""
    with STATE.lock:
        required = STATE.control.get("api_key")
        models = STATE.control.get("models")
    if required:
        given = (authorization or "").removeprefix("Bearer ").strip()
        if given != required:
            shown = f"Incorrect API key provided: {_masked(given)}." if given else "You didn't provide an API key."
            return 401, _error(shown, "invalid_api_key")
    if models is not None and model is not None and model not in models:
        return 404, _error(f"The model `{model}` does not exist or you do not have access to it.", "model_not_found")
    return None


# --------------------------------------------------------------------------------------------- batch


def _batch_object(batch: dict) -> dict:
    return {k: v for k, v in batch.items() if not k.startswith("_")}


def advance(batch: dict) -> None:
    state = STATE
    if batch["status"] == "validating":
        batch["status"] = "in_progress"
        batch["in_progress_at"] = int(time.time())
        return
    if batch["status"] != "in_progress" or state.control.get("batch_hold"):
        return
    with state.lock:
        fail = state.take("batch_fail")
        errors_mode = state.take("batch_errors")
    if fail:
        batch.update(
            status="failed",
            failed_at=int(time.time()),
            errors={"object": "list", "data": [{"code": "server_error", "message": "the batch failed", "line": None, "param": None}]},
        )
        return
    lines = [json.loads(line) for line in state.files[batch["input_file_id"]]["content"].decode().splitlines() if line.strip()]
    outputs, errors = [], []
    for number, line in enumerate(lines, start=1):
        with state.lock:
            state.stats["batch_lines"] += 1
        entry = {"id": f"batch_req_{number}", "custom_id": line["custom_id"], "error": None}
        if errors_mode and number % int(errors_mode.get("every", 2)) == 0:
            entry["response"] = {"status_code": 500, "request_id": f"req_{number}", "body": _error("internal error")}
            errors.append(entry)
            continue
        status, answer, _ = completion(line["body"], batch=True)
        entry["response"] = {"status_code": status, "request_id": f"req_{number}", "body": answer}
        (outputs if status == 200 else errors).append(entry)
    for kind, entries in (("output_file_id", outputs), ("error_file_id", errors)):
        if entries:
            file_id = state.next_id("file")
            content = ("\n".join(json.dumps(e) for e in entries) + "\n").encode()
            state.files[file_id] = {"content": content, "filename": f"{kind}.jsonl", "purpose": "batch_output"}
            batch[kind] = file_id
    batch.update(
        status="completed",
        completed_at=int(time.time()),
        request_counts={"total": len(lines), "completed": len(outputs), "failed": len(errors)},
    )


def parse_multipart(body: bytes, content_type: str) -> dict[str, tuple[str | None, bytes]]:
    boundary = content_type.split("boundary=", 1)[1].strip().strip('"').encode()
    parts = {}
    for chunk in body.split(b"--" + boundary):
        chunk = chunk.strip(b"\r\n")
        if not chunk or chunk == b"--":
            continue
        head, _, data = chunk.partition(b"\r\n\r\n")
        headers = head.decode(errors="replace")
        name = re.search(r'name="([^"]*)"', headers)
        filename = re.search(r'filename="([^"]*)"', headers)
        if name:
            parts[name.group(1)] = (filename.group(1) if filename else None, data)
    return parts


# ------------------------------------------------------------------------------------------- handler


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):
        pass

    def _send(self, status: int, payload, headers: dict | None = None, raw: bytes | None = None) -> None:
        data = raw if raw is not None else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/octet-stream" if raw is not None else "application/json")
            self.send_header("Content-Length", str(len(data)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def _record(self, body: bytes, status: int) -> None:
        with STATE.lock:
            STATE.log.append(
                {
                    "t": time.time(),
                    "method": self.command,
                    "path": self.path,
                    "status": status,
                    "body": body.decode("utf-8", errors="replace"),
                    "authorization": self.headers.get("Authorization"),
                }
            )

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def do_GET(self) -> None:
        path = self.path.split("?")[0]
        if path.startswith("/v1/"):
            refused = refusal(self.headers.get("Authorization"), None)
            if refused:
                self._record(b"", refused[0])
                return self._send(*refused)
        if path == "/v1/models":
            return self._models()
        if path == "/_stats":
            with STATE.lock:
                return self._send(200, STATE.stats)
        if path == "/_log":
            with STATE.lock:
                return self._send(200, STATE.log)
        match = re.fullmatch(r"/v1/files/([\w-]+)/content", path)
        if match and match.group(1) in STATE.files:
            self._record(b"", 200)
            return self._send(200, None, raw=STATE.files[match.group(1)]["content"])
        match = re.fullmatch(r"/v1/files/([\w-]+)", path)
        if match and match.group(1) in STATE.files:
            return self._send(200, self._file_object(match.group(1)))
        match = re.fullmatch(r"/v1/batches/([\w-]+)", path)
        if match and match.group(1) in STATE.batches:
            batch = STATE.batches[match.group(1)]
            with STATE.lock:
                STATE.stats["batch_retrieves"] += 1
            advance(batch)
            self._record(b"", 200)
            return self._send(200, _batch_object(batch))
        self._send(404, _error(f"no route {path}"))

    def _models(self) -> None:
        with STATE.lock:
            route = STATE.control.get("models_route", True)
            models = STATE.control.get("models") or ["test-model"]
        if not route:
            self._record(b"", 404)
            return self._send(404, _error("no route /v1/models"))
        self._record(b"", 200)
        listed = [{"id": name, "object": "model", "created": 0, "owned_by": "test"} for name in models]
        self._send(200, {"object": "list", "data": listed})

    def _file_object(self, file_id: str) -> dict:
        entry = STATE.files[file_id]
        return {
            "id": file_id,
            "object": "file",
            "bytes": len(entry["content"]),
            "created_at": int(time.time()),
            "filename": entry["filename"],
            "purpose": entry["purpose"],
            "status": "processed",
        }

    def do_POST(self) -> None:
        path = self.path.split("?")[0]
        raw = self._body()
        if path == "/_reset":
            with STATE.lock:
                STATE.reset()
            return self._send(200, {"ok": True})
        if path == "/_control":
            with STATE.lock:
                STATE.control.update(json.loads(raw or b"{}"))
                if "hang_after" in STATE.control and STATE.control["hang_after"] is None:
                    STATE.control.pop("hang_after")
                    STATE.release.set()
            return self._send(200, STATE.control)
        if path.startswith("/v1/") and path != "/v1/chat/completions":
            refused = refusal(self.headers.get("Authorization"), None)
            if refused:
                self._record(raw, refused[0])
                return self._send(*refused)
        if path == "/v1/chat/completions":
            return self._chat(raw)
        if path == "/v1/files":
            parts = parse_multipart(raw, self.headers.get("Content-Type", ""))
            filename, content = parts.get("file", ("upload.jsonl", b""))
            purpose = parts.get("purpose", (None, b"batch"))[1].decode()
            with STATE.lock:
                file_id = STATE.next_id("file")
                STATE.files[file_id] = {"content": content, "filename": filename, "purpose": purpose}
                STATE.stats["files_uploaded"] += 1
            self._record(content, 200)
            return self._send(200, self._file_object(file_id))
        if path == "/v1/batches":
            request = json.loads(raw)
            with STATE.lock:
                batch_id = STATE.next_id("batch")
                STATE.stats["batches_created"] += 1
                STATE.batches[batch_id] = {
                    "id": batch_id,
                    "object": "batch",
                    "endpoint": request["endpoint"],
                    "input_file_id": request["input_file_id"],
                    "completion_window": request.get("completion_window", "24h"),
                    "status": "validating",
                    "created_at": int(time.time()),
                    "output_file_id": None,
                    "error_file_id": None,
                    "errors": None,
                    "metadata": request.get("metadata"),
                    "request_counts": {"total": 0, "completed": 0, "failed": 0},
                }
            self._record(raw, 200)
            return self._send(200, _batch_object(STATE.batches[batch_id]))
        self._send(404, _error(f"no route {path}"))

    def _chat(self, raw: bytes) -> None:
        with STATE.lock:
            STATE.stats["chat"] += 1
            hang_after = STATE.control.get("hang_after")
            hang = hang_after is not None and STATE.stats["chat"] > hang_after
            if hang:
                STATE.stats["hanging"] += 1
            release = STATE.release
            die_after = STATE.control.get("die_after")
        if die_after is not None and STATE.stats["chat"] > die_after:
            os._exit(0)  # the server goes away mid-run, without answering
        if hang:
            self._record(raw, 0)
            release.wait(120)
            return self._send(503, _error("released"))
        try:
            body = json.loads(raw)
        except json.JSONDecodeError:
            self._record(raw, 400)
            return self._send(400, _error("body is not JSON"))
        refused = refusal(self.headers.get("Authorization"), body.get("model"))
        if refused:
            self._record(raw, refused[0])
            return self._send(*refused)
        status, answer, headers = completion(body)
        with STATE.lock:
            by_status = STATE.stats["chat_by_status"]
            by_status[str(status)] = by_status.get(str(status), 0) + 1
        self._record(raw, status)
        self._send(status, answer, headers)
        if status == 200:
            with STATE.lock:
                STATE.stats["chat_ok"] += 1


def main() -> None:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
