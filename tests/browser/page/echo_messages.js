// Protobuf wire encoding of EchoRequest and decoding of EchoResponse
// (tests/proto/echo.proto), enough for the browser test without generated
// code or the google-protobuf package.

const VARINT = 0;
const FIXED64 = 1;
const LENGTH_DELIMITED = 2;
const FIXED32 = 5;

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder();

function pushVarint(bytes, value) {
  let rest = value >>> 0;
  while (rest > 0x7f) {
    bytes.push((rest & 0x7f) | 0x80);
    rest >>>= 7;
  }
  bytes.push(rest);
}

function pushUint32(bytes, field, value) {
  if (value) {
    pushVarint(bytes, (field << 3) | VARINT);
    pushVarint(bytes, value);
  }
}

function pushBytes(bytes, field, value) {
  if (value && value.length > 0) {
    pushVarint(bytes, (field << 3) | LENGTH_DELIMITED);
    pushVarint(bytes, value.length);
    for (const byte of value) bytes.push(byte);
  }
}

// Encodes { message, payload, sleepMs, count, failCode, failMessage }; an
// absent field takes its proto3 default and is left out.
export function encodeEchoRequest(request) {
  const bytes = [];
  pushBytes(bytes, 1, utf8Encoder.encode(request.message || ''));
  pushBytes(bytes, 2, request.payload);
  pushUint32(bytes, 3, request.sleepMs);
  pushUint32(bytes, 4, request.count);
  pushUint32(bytes, 5, request.failCode);
  pushBytes(bytes, 6, utf8Encoder.encode(request.failMessage || ''));
  return new Uint8Array(bytes);
}

// Reads protobuf fields from a byte array, throwing on truncated input.
class Reader {
  constructor(bytes) {
    this.bytes = bytes;
    this.offset = 0;
  }

  done() {
    return this.offset >= this.bytes.length;
  }

  varint() {
    let value = 0;
    for (let shift = 0; shift < 64; shift += 7) {
      if (this.done()) throw new Error('truncated varint');
      const byte = this.bytes[this.offset++];
      // Only the low 32 bits are kept, which every uint32 field fits in.
      if (shift < 32) value += (byte & 0x7f) * 2 ** shift;
      if ((byte & 0x80) === 0) return value % 2 ** 32;
    }
    throw new Error('varint longer than 10 bytes');
  }

  take(length) {
    if (this.offset + length > this.bytes.length) throw new Error('truncated field');
    const slice = this.bytes.subarray(this.offset, this.offset + length);
    this.offset += length;
    return slice;
  }

  skip(wireType) {
    if (wireType === VARINT) this.varint();
    else if (wireType === FIXED64) this.take(8);
    else if (wireType === LENGTH_DELIMITED) this.take(this.varint());
    else if (wireType === FIXED32) this.take(4);
    else throw new Error(`unsupported wire type ${wireType}`);
  }
}

// Decodes an EchoResponse into { message, payload, endpoint, grpcTimeout,
// index }, skipping unknown fields.
export function decodeEchoResponse(bytes) {
  const reader = new Reader(bytes);
  const response = { message: '', payload: [], endpoint: '', grpcTimeout: '', index: 0 };
  while (!reader.done()) {
    const key = reader.varint();
    const field = Math.floor(key / 8);
    const wireType = key % 8;
    if (field === 5 && wireType === VARINT) response.index = reader.varint();
    else if (wireType !== LENGTH_DELIMITED || field < 1 || field > 4) reader.skip(wireType);
    else {
      const value = reader.take(reader.varint());
      if (field === 1) response.message = utf8Decoder.decode(value);
      else if (field === 2) response.payload = Array.from(value);
      else if (field === 3) response.endpoint = utf8Decoder.decode(value);
      else response.grpcTimeout = utf8Decoder.decode(value);
    }
  }
  return response;
}
