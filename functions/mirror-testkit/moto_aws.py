#!/usr/bin/env python3
"""moto_server with the documented EC2 Traffic Mirroring behaviours that moto lacks.

The control-plane tests run against this instead of a bare `moto_server` (the test kit starts it
with the Python interpreter of the pinned moto: `python3 moto_aws.py -H 127.0.0.1 -p PORT`, the
same arguments as `moto_server`). It patches moto's EC2 traffic-mirror backend in this process,
then runs moto's own server; everything else is moto unchanged.

Each rule cites the AWS text it implements. Where AWS documents the behaviour but not the exact
error code, the code used is said, with why.

 1. PacketLength default for Network Load Balancer targets: a session created (or modified with
    RemoveFields=packet-length) without PacketLength on an NLB target is described with 8500.
    "For sessions with Network Load Balancer (NLB) Traffic Mirror targets the default
    PacketLength will be set to 8500." (CreateTrafficMirrorSession / ModifyTrafficMirrorSession,
    EC2 API reference). RemoveFields: "When you remove a property from a Traffic Mirror session,
    the property is set to the default." (ModifyTrafficMirrorSession). For Gateway Load Balancer
    endpoint and ENI targets AWS documents no default, so this layer stores nothing (the control
    plane treats both shapes alike, docs/control-plane-aws.md).
 2. A target or filter in use by a session cannot be deleted: moto has no
    DeleteTrafficMirrorTarget / DeleteTrafficMirrorFilter at all; here they exist and refuse with
    `TrafficMirrorTargetInUseException` / `TrafficMirrorFilterInUse` ("The Traffic Mirror target
    cannot be deleted because a Traffic Mirror session is currently using it." / "The Traffic
    Mirror filter cannot be deleted because a Traffic Mirror session is currently using it.",
    "Error codes for the Amazon EC2 API"; "You cannot delete a Traffic Mirror target that is in use
    by a Traffic Mirror session.", DeleteTrafficMirrorTarget).
 3. At most 3 sessions per source network interface: `TrafficMirrorSessionsPerInterfaceLimitExceeded`
    ("Maximum number of sessions per source network interface | 3 | No", Traffic Mirroring quotas;
    "The allowed number of Traffic Mirror sessions for the specified network interface has been
    exceeded.", EC2 error codes).
 4. One session number once per network interface, in 1-32766: "The session number determines
    the order in which sessions are evaluated when an interface is used by multiple sessions ...
    Valid values are 1-32766." (TrafficMirrorSession). AWS names no error for a reused number;
    this layer answers `InvalidParameterValue` ("A value specified in a parameter is not valid,
    is unsupported, or cannot be used.", EC2 error codes), as for a number out of range.
 5. ClientToken idempotency: "If you retry an API request with the same client token and the same
    parameters after it has completed successfully, the result of the original request is
    returned. If you retry a request with the same client token, but change one or more of the API
    parameters, the IdempotentParameterMismatch error is returned." ("Ensuring idempotency",
    EC2 developer guide). Tokens are remembered after the session is deleted (AWS documents no
    shorter window).
 6. The source network interface, the target and the filter must exist:
    `InvalidNetworkInterfaceID.NotFound` ("The specified network interface does not exist.",
    EC2 error codes), `InvalidTrafficMirrorTargetId.NotFound`, `InvalidTrafficMirrorFilterId.NotFound`
    and, for Modify / Delete of an unknown session, `InvalidTrafficMirrorSessionId.NotFound` (the
    error-codes page spells these `InvalidTrafficMirrorTargetNoFound` etc.; the dotted `Id.NotFound`
    forms are what the API sends, as SDK waiters and the Terraform provider match them).
 7. Instance types that cannot be mirror sources: a session on an interface attached to one of
    them is refused with `NetworkInterfaceNotSupported` ("The network interface is not supported
    for Traffic Mirroring.", EC2 error codes). The families: "Traffic Mirroring is not available on
    the following virtualized Nitro instance types: ..." and "Traffic Mirroring is not available on
    bare metal instances." ("Traffic Mirroring limitations"); T2 ("this does not include T2
    instances") likewise. moto does not check any of this.
 8. CloudWatch speaks the Smithy RPC v2 CBOR protocol, which the Rust SDK uses (aws-sdk-cloudwatch
    from 1.100) and moto does not: CloudWatch's API model lists the protocols
    `smithy-rpc-v2-cbor`, `json` and `query` ("Smithy RPC v2 CBOR protocol", smithy.io: requests
    are `POST /service/{ServiceName}/operation/{OperationName}` with the header
    `smithy-protocol: rpc-v2-cbor`, CBOR bodies, timestamps as tag 1, errors with `__type`). Such a
    request is translated to the JSON protocol moto serves (the same operation and members) and
    its answer back to CBOR; moto's CloudWatch is otherwise unchanged.
"""

from __future__ import annotations

import re
import sys
import threading
from typing import Any

from moto.ec2.exceptions import EC2ClientError
from moto.ec2.models import traffic_mirrors as tm
from moto.ec2.responses.traffic_mirrors import TrafficMirrors
from moto.core.responses import ActionResult

NLB_DEFAULT_PACKET_LENGTH = 8500
MAX_SESSIONS_PER_INTERFACE = 3
SESSION_NUMBER_RANGE = range(1, 32767)

# "Traffic Mirroring limitations" (virtualized Nitro families that cannot be sources), plus T2.
UNSUPPORTED_FAMILIES = set(
    """
    m8g m6a m6i m6id m6idn m6in m7a m7g m7gd m7i m7i-flex
    c8g c6a c6gd c6gn c6i c6id c6in c7a c7g c7gd c7gn c7i
    r8g r6a r6i r6id r6idn r6in r7a r7g r7gd r7i r7iz x8g x2idn x2iedn x2iezn
    i4g i4i im4gn is4gen inf2 p5 trn1 trn1n hpc6a hpc6id hpc7a hpc7g t2
    """.split()
)

_lock = threading.Lock()
# client token -> (request parameters, session id); kept after the session is deleted.
_tokens: dict[str, tuple[tuple, str]] = {}
# session id -> the session, for answering a repeated token after a delete.
_created: dict[str, Any] = {}


def _err(code: str, message: str) -> EC2ClientError:
    return EC2ClientError(code, message)


def _unsupported_instance_type(instance_type: str) -> bool:
    family, _, size = instance_type.partition(".")
    return family in UNSUPPORTED_FAMILIES or size.startswith("metal")


def _target(backend: Any, target_id: str) -> Any:
    target = backend.traffic_mirror_targets.get(target_id)
    if target is None:
        raise _err(
            "InvalidTrafficMirrorTargetId.NotFound",
            f"The traffic mirror target '{target_id}' does not exist.",
        )
    return target


def _check_filter(backend: Any, filter_id: str) -> None:
    if filter_id not in backend.traffic_mirror_filters:
        raise _err(
            "InvalidTrafficMirrorFilterId.NotFound",
            f"The traffic mirror filter '{filter_id}' does not exist.",
        )


def _session(backend: Any, session_id: str) -> Any:
    session = backend.traffic_mirror_sessions.get(session_id)
    if session is None:
        raise _err(
            "InvalidTrafficMirrorSessionId.NotFound",
            f"The traffic mirror session '{session_id}' does not exist.",
        )
    return session


def _default_packet_length(target: Any) -> int | None:
    return NLB_DEFAULT_PACKET_LENGTH if target.type == "network-load-balancer" else None


def _check_number(backend: Any, eni_id: str, number: Any, except_id: str | None) -> None:
    if number is None or int(number) not in SESSION_NUMBER_RANGE:
        raise _err(
            "InvalidParameterValue",
            f"The session number {number} is not valid: valid values are 1-32766.",
        )
    for s in backend.traffic_mirror_sessions.values():
        if s.network_interface_id == eni_id and s.id != except_id and s.session_number == int(number):
            raise _err(
                "InvalidParameterValue",
                f"The session number {number} is already used on network interface {eni_id}.",
            )


_original_create = tm.TrafficMirrorsBackend.create_traffic_mirror_session


def create_traffic_mirror_session(self: Any, **kw: Any) -> Any:
    with _lock:
        token = kw.get("client_token")
        params = tuple(
            (k, repr(v)) for k, v in sorted(kw.items()) if k != "client_token"
        )
        if token:
            seen = _tokens.get(token)
            if seen is not None:
                if seen[0] != params:
                    raise _err(
                        "IdempotentParameterMismatch",
                        f"The client token {token} was used with other parameters.",
                    )
                return _created[seen[1]]
        eni_id = kw["network_interface_id"]
        eni = self.get_network_interface(eni_id)  # InvalidNetworkInterfaceID.NotFound
        target = _target(self, kw["traffic_mirror_target_id"])
        _check_filter(self, kw["traffic_mirror_filter_id"])
        instance = getattr(eni, "instance", None)
        if instance is not None and _unsupported_instance_type(instance.instance_type):
            raise _err(
                "NetworkInterfaceNotSupported",
                f"The network interface {eni_id} is not supported for Traffic Mirroring "
                f"(instance type {instance.instance_type}).",
            )
        on_eni = [
            s
            for s in self.traffic_mirror_sessions.values()
            if s.network_interface_id == eni_id
        ]
        if len(on_eni) >= MAX_SESSIONS_PER_INTERFACE:
            raise _err(
                "TrafficMirrorSessionsPerInterfaceLimitExceeded",
                "The allowed number of Traffic Mirror sessions for the specified network "
                "interface has been exceeded.",
            )
        _check_number(self, eni_id, kw.get("session_number"), None)
        if kw.get("packet_length") is None:
            kw = dict(kw, packet_length=_default_packet_length(target))
        session = _original_create(self, **kw)
        if token:
            _tokens[token] = (params, session.id)
            _created[session.id] = session
        return session


_original_delete = tm.TrafficMirrorsBackend.delete_traffic_mirror_session


def delete_traffic_mirror_session(self: Any, traffic_mirror_session_id: str) -> str:
    with _lock:
        _session(self, traffic_mirror_session_id)
        return _original_delete(self, traffic_mirror_session_id)


_original_modify = tm.TrafficMirrorsBackend.modify_traffic_mirror_session


def modify_traffic_mirror_session(self: Any, remove_fields: list[str] | None = None, **kw: Any) -> Any:
    with _lock:
        session = _session(self, kw["traffic_mirror_session_id"])
        if kw.get("traffic_mirror_target_id") is not None:
            _target(self, kw["traffic_mirror_target_id"])
        if kw.get("traffic_mirror_filter_id") is not None:
            _check_filter(self, kw["traffic_mirror_filter_id"])
        if kw.get("session_number") is not None:
            _check_number(self, session.network_interface_id, kw["session_number"], session.id)
        session = _original_modify(self, **kw)
        target = _target(self, session.traffic_mirror_target_id)
        for field in remove_fields or []:
            if field == "packet-length":
                session.packet_length = _default_packet_length(target)
            elif field == "virtual-network-id":
                session.virtual_network_id = None
            elif field == "description":
                session.description = None
        return session


def delete_traffic_mirror_target(self: Any, traffic_mirror_target_id: str) -> str:
    with _lock:
        _target(self, traffic_mirror_target_id)
        if any(
            s.traffic_mirror_target_id == traffic_mirror_target_id
            for s in self.traffic_mirror_sessions.values()
        ):
            raise _err(
                "TrafficMirrorTargetInUseException",
                "The Traffic Mirror target cannot be deleted because a Traffic Mirror session "
                "is currently using it.",
            )
        del self.traffic_mirror_targets[traffic_mirror_target_id]
        return traffic_mirror_target_id


def delete_traffic_mirror_filter(self: Any, traffic_mirror_filter_id: str) -> str:
    with _lock:
        _check_filter(self, traffic_mirror_filter_id)
        if any(
            s.traffic_mirror_filter_id == traffic_mirror_filter_id
            for s in self.traffic_mirror_sessions.values()
        ):
            raise _err(
                "TrafficMirrorFilterInUse",
                "The Traffic Mirror filter cannot be deleted because a Traffic Mirror session "
                "is currently using it.",
            )
        del self.traffic_mirror_filters[traffic_mirror_filter_id]
        return traffic_mirror_filter_id


# The response side: moto's handler for ModifyTrafficMirrorSession drops RemoveFields, and
# there is none for the two deletes.
def _modify_response(self: Any) -> ActionResult:
    session = self.ec2_backend.modify_traffic_mirror_session(
        traffic_mirror_session_id=self._get_param("TrafficMirrorSessionId"),
        traffic_mirror_target_id=self._get_param("TrafficMirrorTargetId"),
        traffic_mirror_filter_id=self._get_param("TrafficMirrorFilterId"),
        packet_length=self._get_int_param("PacketLength"),
        session_number=self._get_int_param("SessionNumber"),
        virtual_network_id=self._get_int_param("VirtualNetworkId"),
        description=self._get_param("Description"),
        remove_fields=_list_param(self, "RemoveFields", "RemoveField"),
    )
    return ActionResult({"TrafficMirrorSession": session.to_dict()})


def _list_param(response: Any, name: str, wire_name: str) -> list[str]:
    value = response._get_param(name)
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, str):
        return [value]
    # Query wire form: RemoveField.1=packet-length&RemoveField.2=...
    pattern = re.compile(rf"^{wire_name}\.\d+$")
    return [
        v[0]
        for k, v in sorted(getattr(response, "querystring", {}).items())
        if pattern.match(k)
    ]


def _delete_target_response(self: Any) -> ActionResult:
    target_id = self.ec2_backend.delete_traffic_mirror_target(
        self._get_param("TrafficMirrorTargetId")
    )
    return ActionResult({"TrafficMirrorTargetId": target_id})


def _delete_filter_response(self: Any) -> ActionResult:
    filter_id = self.ec2_backend.delete_traffic_mirror_filter(
        self._get_param("TrafficMirrorFilterId")
    )
    return ActionResult({"TrafficMirrorFilterId": filter_id})


class CborShim:
    """WSGI middleware: Smithy RPC v2 CBOR requests in, moto's JSON protocol inside (rule 8)."""

    def __init__(self, app: Any) -> None:
        import botocore.parsers
        import botocore.serialize
        import botocore.session

        self.app = app
        self.session = botocore.session.get_session()
        self.parser = botocore.parsers.RpcV2CBORParser()
        self.serializer = botocore.serialize.RpcV2CBORSerializer()
        self.models: dict[str, Any] = {}

    def model(self, service: str) -> Any:
        if service not in self.models:
            self.models[service] = self.session.get_service_model(service)
        return self.models[service]

    def __call__(self, environ: dict, start_response: Any) -> Any:
        if environ.get("HTTP_SMITHY_PROTOCOL") != "rpc-v2-cbor":
            return self.app(environ, start_response)
        import io
        import json

        # /service/GraniteServiceVersion20100801/operation/GetMetricData
        parts = environ.get("PATH_INFO", "").strip("/").split("/")
        if len(parts) != 4 or parts[0] != "service" or parts[2] != "operation":
            return self._error(start_response, "400 Bad Request", "UnknownOperationException", "bad path")
        target, operation = parts[1], parts[3]
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length) if length else b""
        params = {}
        if body:
            params = self.parser.parse_data_item(self.parser.get_peekable_stream_from_bytes(body))
        json_body = json.dumps(_jsonable(params)).encode()
        inner = dict(environ)
        inner.pop("HTTP_SMITHY_PROTOCOL", None)
        inner.update(
            {
                "PATH_INFO": "/",
                "RAW_URI": "/",
                "REQUEST_URI": "/",
                "QUERY_STRING": "",
                "CONTENT_TYPE": "application/x-amz-json-1.0",
                "HTTP_CONTENT_TYPE": "application/x-amz-json-1.0",
                "HTTP_X_AMZ_TARGET": f"{target}.{operation}",
                "CONTENT_LENGTH": str(len(json_body)),
                "wsgi.input": io.BytesIO(json_body),
            }
        )
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list, exc_info: Any = None) -> Any:
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        out = b"".join(self.app(inner, capture))
        status = captured.get("status", "500 Internal Server Error")
        try:
            answer = json.loads(out or b"{}")
        except ValueError:
            return self._error(start_response, status, "InternalFailure", out.decode(errors="replace")[:200])
        if not status.startswith("2"):
            code = str(answer.get("__type", "InternalFailure")).split("#")[-1]
            message = answer.get("message") or answer.get("Message") or ""
            return self._error(start_response, status, code, message)
        service = next(
            (
                name
                for name in ("cloudwatch",)
                if self.model(name).metadata.get("targetPrefix") == target
            ),
            None,
        )
        if service is None:
            return self._error(start_response, "400 Bad Request", "UnknownOperationException", target)
        shape = self.model(service).operation_model(operation).output_shape
        encoded = bytearray()
        if shape is not None:
            self.serializer._serialize_data_item(encoded, answer, shape)
        return self._reply(start_response, status, bytes(encoded))

    def _reply(self, start_response: Any, status: str, body: bytes) -> list:
        start_response(
            status,
            [
                ("Content-Type", "application/cbor"),
                ("smithy-protocol", "rpc-v2-cbor"),
                ("Content-Length", str(len(body))),
            ],
        )
        return [body]

    def _error(self, start_response: Any, status: str, code: str, message: str) -> list:
        return self._reply(start_response, status, _cbor({"__type": code, "message": message}))


def _jsonable(value: Any) -> Any:
    """A decoded CBOR value as the JSON protocol writes it: timestamps as epoch seconds, blobs
    base64."""
    import base64
    import datetime

    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, datetime.datetime):
        return value.timestamp()
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode()
    return value


def _cbor(value: Any) -> bytes:
    """A minimal CBOR encoder for the error bodies (text keys and values)."""

    def head(major: int, n: int) -> bytes:
        if n < 24:
            return bytes([major << 5 | n])
        for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
            if n < 1 << (8 * size):
                return bytes([major << 5 | info]) + n.to_bytes(size, "big")
        raise ValueError(n)

    if isinstance(value, dict):
        return head(5, len(value)) + b"".join(_cbor(k) + _cbor(v) for k, v in value.items())
    data = str(value).encode()
    return head(3, len(data)) + data


def install() -> None:
    """Patch moto's traffic-mirror backend and responses (idempotent)."""
    backend = tm.TrafficMirrorsBackend
    backend.create_traffic_mirror_session = create_traffic_mirror_session
    backend.delete_traffic_mirror_session = delete_traffic_mirror_session
    backend.modify_traffic_mirror_session = modify_traffic_mirror_session
    backend.delete_traffic_mirror_target = delete_traffic_mirror_target
    backend.delete_traffic_mirror_filter = delete_traffic_mirror_filter
    TrafficMirrors.modify_traffic_mirror_session = _modify_response
    TrafficMirrors.delete_traffic_mirror_target = _delete_target_response
    TrafficMirrors.delete_traffic_mirror_filter = _delete_filter_response


def main() -> None:
    """`moto_server -H HOST -p PORT` with the rules above."""
    import argparse

    from werkzeug.serving import run_simple
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )

    parser = argparse.ArgumentParser()
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    args = parser.parse_args(sys.argv[1:])
    install()
    app = CborShim(DomainDispatcherApplication(create_backend_app))
    run_simple(
        args.host,
        args.port,
        app,
        threaded=True,
        use_reloader=False,
        request_handler=MotoRequestHandler,
    )


if __name__ == "__main__":
    main()
