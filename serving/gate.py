"""The gate in front of the service: authentication, limits, content type, request ids, audit.

A plain ASGI middleware added with BentoML's own hook (``Service.add_asgi_middleware``), so it
sees every request before BentoML reads or parses a body and every response before a byte
of it leaves. For each call, in this order:

1. health probes (``/livez``, ``/healthz``, ``/readyz``) pass untouched and unrecorded;
2. a request id is made (answered in ``X-Request-ID``);
3. ``Authorization: Bearer <token>`` is checked (:class:`serving.auth.TokenSet`): else 401;
4. the caller's rate limit, when one is set: else 429 with ``Retry-After``;
5. a declared ``Content-Length`` over ``REIRRAD_MAX_BODY_BYTES``: 413 without reading the body;
6. a body that is not ``application/json`` (UTF-8): 415;
7. the body is read up to the limit (413 beyond it, chunked bodies included) and handed on;
   BentoML then parses it once, strictly (:mod:`serving.schemas`);
8. when the response starts, the call's audit record (outputs left by the endpoint, or just
   route, status and caller for a refusal) is committed before the status line is sent; if
   it cannot be, the client gets 503 and nothing else (fail closed).

Refusals are logged at INFO on one line (route, status, request id, caller, reason by type and
location): never a body, a value, a token or a traceback.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from serving.audit import AuditRecord

logger = logging.getLogger("reirrad.api")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PUBLIC_PATHS = frozenset({"/livez", "/healthz", "/readyz"})
SYSTEM_ROUTES = frozenset({"/", "/docs.json", "/schema.json", "/metrics"})
"""BentoML's own pages; they need a token like any route and are named as themselves."""
OTHER_ROUTE = "(other)"
"""How an unknown path is recorded and logged (a path can carry anything a client typed)."""
JSON_MEDIA_TYPE = "application/json"
JSON_CHARSET = "utf-8"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
CALL_SCOPE_KEY = "reirrad.call"
REQUEST_ID_HEADER = b"x-request-id"
MAX_ERROR_BODY_BYTES = 64 * 1024
"""A refusal body larger than this is not read for the log line's reason."""
MAX_REASON_ITEMS = 8
ANONYMOUS = "anonymous"
SERVICE_PENDING = "service"  # caller name while the service is not ready


@dataclass
class CallInfo:
    """One call as the gate and the endpoint share it (kept in the ASGI scope)."""

    request_id: str
    route: str
    method: str = "POST"
    caller: str = ANONYMOUS
    patient_keys: list[str] = field(default_factory=list)
    input_mac: str | None = None
    outputs: dict[str, Any] | None = None

    def record(self, status: int, model: dict[str, Any] | None) -> AuditRecord:
        answered = status < 400
        return AuditRecord(
            request_id=self.request_id,
            route=self.route,
            status=status,
            caller=self.caller,
            model=model,
            patient_keys=self.patient_keys if answered else [],
            input_mac=self.input_mac if answered else None,
            outputs=self.outputs if answered else None,
        )


class _Disconnected(Exception):
    """The client went away while sending its body."""


def _headers(scope: Scope) -> dict[str, str]:
    return {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}


def _is_json(content_type: str) -> bool:
    media, *params = (p.strip().lower() for p in content_type.split(";"))
    if media != JSON_MEDIA_TYPE:
        return False
    for p in params:
        name, _, value = p.partition("=")
        if name.strip() == "charset" and value.strip().strip('"') != JSON_CHARSET:
            return False
    return True


def error_body(error: str, detail: Iterable[dict[str, Any]] = ()) -> bytes:
    """The one shape of every refusal: ``{"error": ..., "detail": [{type, loc, msg}]}``."""
    return json.dumps({"error": error, "detail": list(detail)}).encode("utf-8")


def _reason(body: bytes) -> str:
    """'type at loc, ...' from a refusal body, for the log line (no values are in it)."""
    try:
        data = json.loads(body)
        items = data.get("detail") or []
        parts = []
        for d in items[:MAX_REASON_ITEMS]:
            loc = ".".join(str(p) for p in d.get("loc", []) if isinstance(p, int | str))
            kind = str(d.get("type", "invalid"))
            # an unknown field's name was typed by the client: log that one was there, not it
            if kind == "extra_forbidden":
                loc = loc.rsplit(".", 1)[0] if "." in loc else ""
            parts.append(f"{kind}@{loc}" if loc else kind)
        more = len(items) - MAX_REASON_ITEMS
        return ",".join(parts) + (f",+{more}" if more > 0 else "") or str(data.get("error"))
    except (ValueError, AttributeError, TypeError):
        return "unreadable"


class Gate:
    """The ASGI middleware (see the module docstring). ``routes``: the API's own paths."""

    def __init__(self, app, routes: Iterable[str], service_getter: Callable[[], Any]) -> None:
        self.app = app
        self.routes = frozenset(routes) | SYSTEM_ROUTES
        self._service = service_getter

    def route_name(self, path: str) -> str:
        return path if path in self.routes else OTHER_ROUTE

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        call = CallInfo(
            request_id=uuid.uuid4().hex,
            route=self.route_name(scope["path"]),
            method=str(scope.get("method", "")),
        )
        scope[CALL_SCOPE_KEY] = call
        svc = self._service()
        if svc is None:
            call.caller = SERVICE_PENDING
            await self._respond(send, call, 503, "the service is starting; try again shortly")
            return
        headers = _headers(scope)
        caller = svc.tokens.identify(headers.get("authorization"))
        if caller is None:
            await self._refuse(svc, send, call, 401, "a valid bearer token is required",
                               "unauthorized", [(b"www-authenticate", b'Bearer realm="reirrad"')])
            return
        call.caller = caller
        allowed, wait_s = svc.limiter.allow(caller)
        if not allowed:
            retry = str(max(1, round(wait_s))).encode()
            await self._refuse(svc, send, call, 429, "rate limit exceeded for this token",
                               "rate_limited", [(b"retry-after", retry)])
            return
        limit = svc.settings.max_body_bytes
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await self._refuse(svc, send, call, 400, "malformed Content-Length", "bad_length")
                return
            if int(declared) > limit:
                await self._too_large(svc, send, call, limit)
                return
        try:
            body = await self._read_body(receive, limit)
        except _Disconnected:
            return
        if body is None:
            await self._too_large(svc, send, call, limit)
            return
        has_body = bool(body) or (scope["method"] in BODY_METHODS and "content-type" in headers)
        if has_body and not _is_json(headers.get("content-type", "")):
            await self._refuse(svc, send, call, 415,
                               "the body must be JSON (Content-Type: application/json)",
                               "unsupported_media_type")
            return
        await self.app(scope, _replay(body, receive), self._audited_send(svc, send, call))

    # ------------------------------------------------------------------------ helpers
    @staticmethod
    async def _read_body(receive: Receive, limit: int) -> bytes | None:
        """The whole body, or None as soon as it passes ``limit`` bytes."""
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _Disconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)

    async def _too_large(self, svc, send: Send, call: CallInfo, limit: int) -> None:
        await self._refuse(svc, send, call, 413, f"the body is larger than {limit} bytes",
                           "body_too_large", [(b"connection", b"close")])

    async def _refuse(self, svc, send: Send, call: CallInfo, status: int, message: str,
                      kind: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        """A refusal made by the gate: audited, logged on one line, answered."""
        try:
            await svc.audit_writer.commit(call.record(status, svc.model_dict))
        except Exception:
            logger.error("audit trail unavailable: %s refused with 503 request_id=%s",
                         call.route, call.request_id, exc_info=True)
            await self._respond(send, call, 503, "the call could not be audited")
            return
        logger.info("refused %s %s status=%d request_id=%s caller=%s reason=%s",
                    call.method, call.route, status, call.request_id, call.caller, kind)
        body = error_body(message, [{"type": kind, "loc": [], "msg": message}])
        await self._respond(send, call, status, body=body, extra=extra)

    @staticmethod
    async def _respond(send: Send, call: CallInfo, status: int, message: str = "",
                       body: bytes | None = None,
                       extra: list[tuple[bytes, bytes]] | None = None) -> None:
        body = error_body(message) if body is None else body
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (REQUEST_ID_HEADER, call.request_id.encode()),
            (b"cache-control", b"no-store"),
            *(extra or []),
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _audited_send(self, svc, send: Send, call: CallInfo) -> Send:
        """``send`` that commits the audit record before the response starts."""
        state = {"status": 0, "blocked": False, "error_body": []}

        async def audited(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = int(message["status"])
                state["status"] = status
                try:
                    await svc.audit_writer.commit(call.record(status, svc.model_dict))
                except Exception:
                    logger.error("audit trail unavailable: %s answered 503 request_id=%s",
                                 call.route, call.request_id, exc_info=True)
                    state["blocked"] = True
                    await self._respond(send, call, 503, "the call could not be audited")
                    return
                headers = [(k, v) for k, v in message.get("headers", [])
                           if k.lower() != REQUEST_ID_HEADER]
                headers += [(REQUEST_ID_HEADER, call.request_id.encode()),
                            (b"cache-control", b"no-store")]
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body":
                if state["blocked"]:
                    return
                if state["status"] >= 400:
                    chunks = state["error_body"]
                    if sum(map(len, chunks)) < MAX_ERROR_BODY_BYTES:
                        chunks.append(message.get("body", b""))
                    if not message.get("more_body", False):
                        logger.info(
                            "refused %s %s status=%d request_id=%s caller=%s reason=%s",
                            call.method, call.route, state["status"], call.request_id,
                            call.caller, _reason(b"".join(chunks)),
                        )
            await send(message)

        return audited


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the already read body once, then defers to the original."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
