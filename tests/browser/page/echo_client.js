// Calls legate.test.Echo (tests/proto/echo.proto) through the proxy with the
// grpc-web client runtime and writes what each call returned into #results.
// The query string gives `proxy` (the proxy's origin) and `mode`
// (`grpcwebtext` or `grpcweb`, as protoc-gen-grpc-web names them).

import { GrpcWebClientBase, MethodDescriptor, MethodType } from 'grpc-web';
import { encodeEchoRequest, decodeEchoResponse } from './echo_messages.js';

const SERVICE = 'legate.test.Echo';

function method(name, type) {
  return new MethodDescriptor(`/${SERVICE}/${name}`, type, Object, Object, encodeEchoRequest, decodeEchoResponse);
}

const UNARY = method('Unary', MethodType.UNARY);
const SERVER_STREAM = method('ServerStream', MethodType.SERVER_STREAMING);
// A service the proxy routes to a cluster without endpoints.
const EMPTY = new MethodDescriptor('/legate.test.Empty/Call', MethodType.UNARY, Object, Object, encodeEchoRequest, decodeEchoResponse);

// Makes one unary call and resolves with its response, response headers,
// status and error (each null when absent). It never rejects.
function unary(client, proxy, descriptor, request, metadata) {
  return new Promise((resolve) => {
    const result = { response: null, headers: null, status: null, error: null };
    const call = client.rpcCall(proxy + descriptor.getName(), request, metadata, descriptor, (error, response) => {
      result.error = error ? { code: error.code, message: error.message } : null;
      result.response = response || null;
      // The runtime may emit 'status' right after the callback, so the
      // result is taken once the current event has run.
      setTimeout(() => resolve(result), 0);
    });
    call.on('metadata', (headers) => { result.headers = headers; });
    call.on('status', (status) => { result.status = { code: status.code, details: status.details }; });
  });
}

// Makes one server-streaming call and resolves with every message, the
// status and the error once the stream ends or fails.
function serverStream(client, proxy, request) {
  return new Promise((resolve) => {
    const result = { messages: [], status: null, error: null };
    const call = client.serverStreaming(proxy + SERVER_STREAM.getName(), request, {}, SERVER_STREAM);
    let ended = false;
    const end = () => {
      if (!ended) {
        ended = true;
        resolve(result);
      }
    };
    call.on('data', (message) => result.messages.push(message));
    call.on('status', (status) => { result.status = { code: status.code, details: status.details }; });
    call.on('error', (error) => {
      result.error = { code: error.code, message: error.message };
      end();
    });
    call.on('end', end);
  });
}

async function runCalls(proxy, mode) {
  const format = mode === 'grpcwebtext' ? 'text' : 'binary';
  const client = new GrpcWebClientBase({ format });
  return {
    mode,
    unary: await unary(client, proxy, UNARY, { message: `hello ${mode}` }, { 'x-echo': `from ${mode}` }),
    stream: await serverStream(client, proxy, { message: 'tick', count: 3 }),
    streamThenError: await serverStream(client, proxy, { message: 'tock', count: 2, failCode: 9, failMessage: 'stopped here' }),
    failure: await unary(client, proxy, UNARY, { failCode: 5, failMessage: 'no such echo' }, {}),
    unavailable: await unary(client, proxy, EMPTY, {}, {}),
  };
}

async function main() {
  const output = document.getElementById('results');
  const query = new URLSearchParams(location.search);
  try {
    const results = await runCalls(query.get('proxy'), query.get('mode'));
    output.textContent = JSON.stringify(results);
  } catch (error) {
    output.textContent = JSON.stringify({ pageError: String(error && error.stack || error) });
  }
  output.dataset.done = 'true';
}

main();
