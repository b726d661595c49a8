"""Checks gRPC calls through the proxy with Python's grpcio, an independent
client. Messages of tests/proto/echo.proto are encoded by hand, so no
generated code is needed. Usage: grpcio_client.py HOST:PORT"""

import sys
import time

import grpc


def text_field(number, text):
    data = text.encode()
    assert len(data) < 128
    return bytes([number << 3 | 2, len(data)]) + data


def varint_field(number, value):
    out = bytearray([number << 3])
    while True:
        byte = value & 0x7F
        value >>= 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def same(data):
    return data


def method(channel, kind, name):
    factory = getattr(channel, kind)
    return factory("/legate.test.Echo/" + name, request_serializer=same, response_deserializer=same)


def expect_error(call, request, code, **kwargs):
    try:
        call(request, **kwargs)
    except grpc.RpcError as error:
        assert error.code() == code, (error.code(), error.details())
        return error
    raise AssertionError("expected " + str(code))


def main(address):
    channel = grpc.insecure_channel(address)
    unary = method(channel, "unary_unary", "Unary")

    response, call = unary.with_call(text_field(1, "py"), metadata=[("x-echo", "v"), ("x-echo-bin", b"\x00\xff")])
    assert response.startswith(text_field(1, "py")), response
    initial = dict(call.initial_metadata())
    assert initial["x-echo"] == "v", initial
    assert initial["x-echo-bin"] == b"\x00\xff", initial

    error = expect_error(unary, varint_field(5, 5) + text_field(6, "nf 100%"), grpc.StatusCode.NOT_FOUND)
    assert error.details() == "nf 100%", error.details()

    stream = method(channel, "unary_stream", "ServerStream")
    assert len(list(stream(varint_field(4, 25)))) == 25

    client_stream = method(channel, "stream_unary", "ClientStream")
    joined = client_stream(iter([text_field(1, "a"), text_field(1, "b")]))
    assert joined.startswith(text_field(1, "ab")), joined

    bidi = method(channel, "stream_stream", "BidiStream")
    replies = list(bidi(iter([text_field(1, str(i)) for i in range(10)])))
    assert len(replies) == 10

    started = time.monotonic()
    expect_error(unary, varint_field(3, 2000), grpc.StatusCode.DEADLINE_EXCEEDED, timeout=0.2)
    assert time.monotonic() - started < 1.0

    missing = channel.unary_unary("/legate.test.Missing/Call", request_serializer=same, response_deserializer=same)
    error = expect_error(missing, b"", grpc.StatusCode.UNIMPLEMENTED)
    assert "no route" in error.details(), error.details()
    empty = channel.unary_unary("/legate.test.Empty/Call", request_serializer=same, response_deserializer=same)
    error = expect_error(empty, b"", grpc.StatusCode.UNAVAILABLE)
    assert "no healthy upstream" in error.details(), error.details()
    print("grpcio: all checks passed")


if __name__ == "__main__":
    main(sys.argv[1])
