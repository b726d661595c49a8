#!/usr/bin/env bash
# Rewrites symbol-order.txt, the order in which the linker lays out the
# functions of the release binary (see build.rs), and symbol-order.rustc,
# the compiler whose symbol names it lists.
#
# Runs the release `legate proxy` under callgrind with the benchmark's
# configs (a static bootstrap, one worker) and lists the functions it
# executed in three groups. The first lists those that ran from start until
# the proxy was at rest, busiest first. The second lists those that only ran
# while it proxied HTTP/1.1 requests and gRPC calls or shut down. The third
# lists those that only ran with 1,000 extra clusters and routes, such as
# the route index, so a large config touches few extra pages of code.
#
# Needs valgrind (callgrind_annotate, callgrind_control), h2load and python3.
set -euo pipefail
cd "$(dirname "$0")/../../.."
link_dir=crates/legate/link
peers=crates/bench/peers/legate

for tool in valgrind callgrind_annotate callgrind_control h2load python3; do
  command -v "$tool" >/dev/null || { echo "$tool is required" >&2; exit 1; }
done

cargo build --release --locked -p legate -p legate-bench
target_dir=${CARGO_TARGET_DIR:-target}
legate=$target_dir/release/legate
bench=$target_dir/release/legate-bench

work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Stops one process this script started and drops its PID from the list.
stop() {
  kill -INT "$1"
  wait "$1" || true
  local kept=()
  for pid in "${pids[@]}"; do [ "$pid" = "$1" ] || kept+=("$pid"); done
  pids=("${kept[@]}")
}

# Runs h2load and fails unless every request succeeded.
load() {
  local report
  report=$(h2load "$@")
  if ! grep -Eq '^requests: .* ([1-9][0-9]*) succeeded, 0 failed' <<<"$report"; then
    echo "h2load reported failed requests:" >&2
    grep '^requests:' <<<"$report" >&2
    exit 1
  fi
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_for_port() {
  for _ in $(seq 1 300); do
    if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $1), 1)" 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "nothing listens on port $1 after 30 s" >&2
  exit 1
}

# Prints a benchmark config with its placeholders filled:
# render CONFIG LISTEN_PORT ADMIN_PORT UPSTREAM_PORT [SCALE]. SCALE extra
# clusters and routes come from the benchmark's templates (none by default).
# A placeholder left empty takes its line with it, and the grpc-web filter
# is always left out.
render() {
  python3 - "$1" "$2" "$3" "$4" "${5:-0}" <<'PY'
import os, re, sys
config, listen, admin, upstream, scale = sys.argv[1:6]
folder = os.path.dirname(config)

def fill(text, values):
    for name, value in values.items():
        if value == "":
            text = re.sub(r"^[ \t]*\{\{" + name + r"\}\}\n", "", text, flags=re.M)
        text = text.replace("{{" + name + "}}", value)
    return text

def repeat(template):
    text = open(os.path.join(folder, template)).read()
    copies = (fill(text, {"index": str(index), "upstream_port": upstream}) for index in range(int(scale)))
    return "".join(copies).rstrip()

values = {
    "listen_port": listen,
    "admin_port": admin,
    "upstream_port": upstream,
    "scale_routes": repeat("scale_route.yaml"),
    "scale_clusters": repeat("scale_cluster.yaml"),
    "grpc_web_filter": "",
}
text = fill(open(config).read(), values)
if "{{" in text:
    sys.exit(f"{config} has a placeholder this script does not fill")
sys.stdout.write(text)
PY
}

# Prints the symbols of the legate binary with a cost in one callgrind
# dump, busiest first. Code without a name (a bare address) is left out.
symbols_of() {
  callgrind_annotate --auto=no --threshold=100 --show-percs=no "$1" \
    | grep -F "[$(realpath "$legate")]" \
    | sed -E 's/^ *[0-9,]+ +//; s/ \[[^]]*\]$//; s/^.*://' \
    | grep -E '^[A-Za-z_][A-Za-z0-9_.$]*$' || true
}

# Starts `legate proxy` under callgrind and sets proxy_pid. The dump files
# are named NAME.PID (at exit) and NAME.PID.N (on request).
profile_proxy() {
  local config=$1 name=$2
  valgrind --tool=callgrind --demangle=no --dump-line=no \
    --callgrind-out-file="$work/$name.%p" \
    "$legate" proxy --config "$config" --concurrency 1 >"$work/$name.log" 2>&1 &
  proxy_pid=$!
  pids+=("$proxy_pid")
}

echo_port=$(free_port); stats_port=$(free_port); grpc_port=$(free_port)
"$bench" echo-upstream --port "$echo_port" --stats-port "$stats_port" >"$work/echo.log" 2>&1 &
pids+=($!)
"$bench" grpc-upstream --port "$grpc_port" >"$work/grpc.log" 2>&1 &
pids+=($!)

# HTTP/1.1: a dump one second after the admin port accepts connections
# covers the start and rest. Requests follow.
listen=$(free_port); admin=$(free_port)
render "$peers/bootstrap.yaml" "$listen" "$admin" "$echo_port" >"$work/http.yaml"
profile_proxy "$work/http.yaml" http
http_pid=$proxy_pid
wait_for_port "$admin"
sleep 1
callgrind_control --dump=rest "$http_pid" >/dev/null
for _ in $(seq 1 100); do
  ls "$work"/http."$http_pid".* >/dev/null 2>&1 && break
  sleep 0.1
done
rest_dump=$(ls "$work"/http."$http_pid".* 2>/dev/null) || { echo "callgrind wrote no dump at rest" >&2; exit 1; }
load --h1 -n 2000 -c 8 "http://127.0.0.1:$listen/"
stop "$http_pid"

# gRPC unary and server-streaming calls over h2c.
listen=$(free_port); admin=$(free_port)
render "$peers/grpc.yaml" "$listen" "$admin" "$grpc_port" >"$work/grpc.yaml"
profile_proxy "$work/grpc.yaml" grpc
grpc_pid=$proxy_pid
wait_for_port "$admin"
printf '\0\0\0\0\4\n\2hi' >"$work/request.bin"
for method in Unary ServerStream; do
  load -n 500 -c 4 -m 8 --data="$work/request.bin" \
    -H 'content-type: application/grpc' -H 'te: trailers' \
    "http://127.0.0.1:$listen/bench.Echo/$method"
done
stop "$grpc_pid"

# HTTP/1.1 with 1,000 extra clusters, each with a route before the
# catch-all, as in the benchmark's memory scenario.
listen=$(free_port); admin=$(free_port)
render "$peers/bootstrap.yaml" "$listen" "$admin" "$echo_port" 1000 >"$work/scaled.yaml"
profile_proxy "$work/scaled.yaml" scaled
scaled_pid=$proxy_pid
# The admin port opens before the clusters load, the listener after.
wait_for_port "$listen"
load --h1 -n 200 -c 4 "http://127.0.0.1:$listen/" "http://127.0.0.1:$listen/svc-999/"
stop "$scaled_pid"

symbols_of "$rest_dump" >"$work/rest.txt"
{ symbols_of "$work/http.$http_pid"; symbols_of "$work/grpc.$grpc_pid"; } >"$work/traffic.txt"
symbols_of "$work/scaled.$scaled_pid" >"$work/scaled.txt"
cat "$work/rest.txt" "$work/traffic.txt" "$work/scaled.txt" | awk '!seen[$0]++' >"$work/order.txt"

# A proxy runs several hundred functions of its own binary before it rests,
# so far fewer means callgrind or the parsing above went wrong.
rest_count=$(wc -l <"$work/rest.txt")
if [ "$rest_count" -lt 200 ]; then
  echo "only $rest_count functions found until rest; symbol-order.txt is left as it was" >&2
  exit 1
fi
mv "$work/order.txt" "$link_dir/symbol-order.txt"
"${RUSTC:-rustc}" --version >"$link_dir/symbol-order.rustc"

echo "$rest_count functions run until rest, $(wc -l <"$link_dir/symbol-order.txt") in all"
