#!/usr/bin/env bash
# End-to-end load: the same load generator, the same mock upstream and the
# same number of connections against three paths, in one run:
#   direct    client -> mock upstream
#   nginx     client -> nginx (proxy_pass, keep-alive both sides) -> mock
#   tollgate  client -> tollgate serve (auth, hold, meter, settle) -> mock
# Runs are alternated (direct, nginx, tollgate, direct, ...) and repeated,
# so drift on a shared machine hits every path alike. Two loads:
#   closed loop  wrk, fixed connections, as fast as possible: throughput
#   open loop    oha -q RATE --latency-correction: latency at a fixed rate
#                (a closed loop hides queueing delay)
# Prints throughput, p50 and p99 for each, and tollgate's ratios to nginx;
# for the closed loop also each proxy's CPU time (user + system, from
# /proc) per request, a steadier measure than throughput on a shared box.
#
# With LOAD_HTTPS=1, a fourth path (P7):
#   tollgate_https  client -> tollgate -> the mock behind TLS (https://,
#                   a CA made here with openssl, trusted by upstream_ca_file)
# the same gateway process, a model priced alike whose upstream_url is
# https://; the summary adds its throughput ratio to the http:// upstream.
#
# Usage: benches/load.sh            (default: ~4 minutes after the build)
#        LOAD_QUICK=1 benches/load.sh   (one short round of each, ~1 minute)
#        LOAD_HTTPS=1 benches/load.sh   (adds the https:// upstream path)
# Knobs: LOAD_ROUNDS, LOAD_SECONDS, LOAD_CONNECTIONS (32), LOAD_RATE (5000),
#        LOAD_OUT (a directory to keep raw results and logs in),
#        LOAD_TOLLGATE_BIN (run that tollgate binary instead of building one).
# Installs wrk, nginx-light, curl and jq with apt-get and oha with cargo if
# they are missing (root; oha takes ~4 minutes to build once). Everything
# listens on 127.0.0.1 on free ports; every process started is stopped on
# exit.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)

if [[ -n "${LOAD_QUICK:-}" ]]; then
  ROUNDS=${LOAD_ROUNDS:-1}
  SECONDS_PER_RUN=${LOAD_SECONDS:-5}
else
  ROUNDS=${LOAD_ROUNDS:-3}
  SECONDS_PER_RUN=${LOAD_SECONDS:-10}
fi
CONNECTIONS=${LOAD_CONNECTIONS:-32}
RATE=${LOAD_RATE:-5000}
WARMUP_SECONDS=3
OPERATOR_TOKEN="load-operator-$RANDOM$RANDOM"
BODY='{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello! Please say hello back."}],"max_tokens":16}'

log() { printf '[load] %s\n' "$*" >&2; }

# ---- tools ---------------------------------------------------------------
need_apt=()
command -v wrk >/dev/null || need_apt+=(wrk)
[[ -x /usr/sbin/nginx ]] || command -v nginx >/dev/null || need_apt+=(nginx-light)
command -v curl >/dev/null || need_apt+=(curl)
command -v jq >/dev/null || need_apt+=(jq)
if ((${#need_apt[@]})); then
  log "installing ${need_apt[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
if ! command -v oha >/dev/null; then
  log "installing oha (cargo install, once)"
  cargo install oha --locked --quiet
fi
export PATH="$HOME/.cargo/bin:$PATH"

if [[ -n "${LOAD_TOLLGATE_BIN:-}" ]]; then
  # Another build (e.g. an older commit's, to compare ratios to nginx).
  TOLLGATE=$LOAD_TOLLGATE_BIN
else
  log "building tollgate (release)"
  cargo build --release --quiet
  TOLLGATE="$ROOT/target/release/tollgate"
fi

# ---- processes -----------------------------------------------------------
WORK=$(mktemp -d /tmp/tollgate-load.XXXXXX)
OUT=${LOAD_OUT:-$WORK}
mkdir -p "$OUT"
KEEP_WORK=${LOAD_OUT:-}
# shellcheck source=benches/lib.sh
source benches/lib.sh

wait_http() { # url
  for _ in $(seq 100); do
    curl -s -o /dev/null "$1" && return 0
    sleep 0.1
  done
  log "nothing answers at $1"
  return 1
}

free_port UP_PORT
free_port NGINX_PORT
free_port GW_PORT
free_port METRICS_PORT
UPSTREAM="http://127.0.0.1:$UP_PORT"

"$TOLLGATE" mock-upstream --listen "127.0.0.1:$UP_PORT" >"$OUT/mock.log" 2>&1 &
PIDS+=($!)
MOCK_PID=$!

PRICING=config/pricing.toml
if [[ -n "${LOAD_HTTPS:-}" ]]; then
  # A CA and a certificate for 127.0.0.1 it signed; the mock behind TLS.
  free_port UP_TLS_PORT
  T="$WORK/tls"
  mkdir -p "$T"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$T/ca.key" -out "$T/ca.pem" -days 2 -subj "/CN=tollgate load CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$T/up.key" -out "$T/up.csr" -subj "/CN=127.0.0.1" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' >"$T/ext"
  openssl x509 -req -in "$T/up.csr" -CA "$T/ca.pem" -CAkey "$T/ca.key" -CAcreateserial \
    -out "$T/up.pem" -days 2 -extfile "$T/ext" 2>/dev/null
  "$TOLLGATE" mock-upstream --listen "127.0.0.1:$UP_TLS_PORT" \
    --tls-cert "$T/up.pem" --tls-key "$T/up.key" >"$OUT/mock-tls.log" 2>&1 &
  PIDS+=($!)
  PRICING="$WORK/pricing.toml"
  { cat config/pricing.toml
    printf '\n[models."gpt-4o-mini-tls"]\ninput = "0.15"\noutput = "0.60"\n'
    printf 'cached_input = "0.075"\nupstream_url = "https://127.0.0.1:%s"\n' "$UP_TLS_PORT"
  } >"$PRICING"
  export TOLLGATE_UPSTREAM_CA_FILE="$T/ca.pem"
fi

mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes auto;
daemon off;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    keepalive_requests 1000000;
    upstream mock {
        server 127.0.0.1:$UP_PORT;
        keepalive 128;
        keepalive_requests 1000000;
    }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://mock;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
"$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" >"$OUT/nginx.log" 2>&1 &
PIDS+=($!)
NGINX_PID=$!

TOLLGATE_LISTEN="127.0.0.1:$GW_PORT" \
TOLLGATE_METRICS_LISTEN="127.0.0.1:$METRICS_PORT" \
TOLLGATE_UPSTREAM_URL="$UPSTREAM" \
TOLLGATE_OPERATOR_TOKEN="$OPERATOR_TOKEN" \
TOLLGATE_PRICING="$PRICING" \
  "$TOLLGATE" serve >"$OUT/tollgate.log" 2>&1 &
PIDS+=($!)
TOLLGATE_PID=$!

wait_http "$UPSTREAM/v1/models"
wait_http "http://127.0.0.1:$NGINX_PORT/v1/models"
wait_http "http://127.0.0.1:$GW_PORT/healthz"

# ---- a funded user and key, through the HTTP API ---------------------------
GW="http://127.0.0.1:$GW_PORT"
api() { # method path bearer body [extra header]
  local args=(-sS -X "$1" "$GW$2" -H 'content-type: application/json' -d "$4")
  [[ -n "$3" ]] && args+=(-H "authorization: Bearer $3")
  [[ -n "${5:-}" ]] && args+=(-H "$5")
  curl "${args[@]}"
}
EMAIL="load-$RANDOM$RANDOM@example.com"
USER_ID=$(api POST /api/users "" "{\"email\":\"$EMAIL\",\"password\":\"load-password-1\"}" | jq -r .id)
SESSION=$(api POST /api/sessions "" "{\"email\":\"$EMAIL\",\"password\":\"load-password-1\"}" | jq -r .token)
api POST /api/admin/deposits "$OPERATOR_TOKEN" \
  "{\"user_id\":\"$USER_ID\",\"amount\":\"1000000\",\"kind\":\"stripe\"}" \
  "Idempotency-Key: load-$RANDOM$RANDOM" >/dev/null
KEY=$(api POST /api/keys "$SESSION" '{"name":"load"}' | jq -r .key)
[[ "$KEY" == tgk_* ]] || { log "could not create an API key"; exit 1; }
check=$(curl -s -o /dev/null -w '%{http_code}' "$GW/v1/chat/completions" \
  -H "authorization: Bearer $KEY" -H 'content-type: application/json' -d "$BODY")
[[ "$check" == 200 ]] || { log "a proxied call answered $check"; exit 1; }

declare -A URL=(
  [direct]="$UPSTREAM/v1/chat/completions"
  [nginx]="http://127.0.0.1:$NGINX_PORT/v1/chat/completions"
  [tollgate]="$GW/v1/chat/completions"
)
TARGETS=(direct nginx tollgate)
declare -A BODY_OF=([direct]="$BODY" [nginx]="$BODY" [tollgate]="$BODY")
if [[ -n "${LOAD_HTTPS:-}" ]]; then
  URL[tollgate_https]="$GW/v1/chat/completions"
  BODY_OF[tollgate_https]=${BODY/gpt-4o-mini/gpt-4o-mini-tls}
  TARGETS+=(tollgate_https)
  check=$(curl -s -o /dev/null -w '%{http_code}' "$GW/v1/chat/completions" \
    -H "authorization: Bearer $KEY" -H 'content-type: application/json' -d "${BODY_OF[tollgate_https]}")
  [[ "$check" == 200 ]] || { log "a call through the https:// upstream answered $check"; exit 1; }
fi

# ---- load generators -----------------------------------------------------
for t in "${TARGETS[@]}"; do
cat >"$WORK/post-$t.lua" <<EOF
wrk.method = "POST"
wrk.body = '${BODY_OF[$t]}'
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer $KEY"
done = function(summary, latency, requests)
  local secs = summary.duration / 1e6
  local e = summary.errors
  io.write(string.format("RESULT %.1f %.3f %.3f %d %d %d\n",
    summary.requests / secs, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, e.status,
    e.connect + e.read + e.write + e.timeout, summary.requests))
end
EOF
done

# CPU time (user + system, clock ticks) of a process and its children
# (nginx's workers): what one path's proxy spent.
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { # pid...
  local p total=0
  for p in "$@" $(pgrep -P "$1" 2>/dev/null); do
    [[ -r /proc/$p/stat ]] && total=$((total + $(awk '{print $14 + $15}' "/proc/$p/stat")))
  done
  echo "$total"
}
proxy_pid() { # target -> pid of its proxy (none for direct)
  case $1 in nginx) echo "$NGINX_PID" ;; tollgate*) echo "$TOLLGATE_PID" ;; *) echo "" ;; esac
}

closed() { # target seconds -> "rps p50_ms p99_ms bad proxy_cpu_us_per_req"
  local line pid before after cpu=-
  pid=$(proxy_pid "$1")
  [[ -n "$pid" ]] && before=$(cpu_ticks "$pid")
  line=$(timeout $(($2 + 30)) wrk -t2 -c"$CONNECTIONS" -d"${2}s" -s "$WORK/post-$1.lua" \
    "${URL[$1]}" | grep '^RESULT')
  if [[ -n "$pid" ]]; then
    after=$(cpu_ticks "$pid")
    cpu=$(awk -v d=$((after - before)) -v hz="$CLK_TCK" '{printf "%.2f", d * 1e6 / hz / $7}' <<<"$line")
  fi
  awk -v cpu="$cpu" '{print $2, $3, $4, $5 + $6, cpu}' <<<"$line"
}

open_loop() { # target seconds -> "rps p50_ms p99_ms bad"
  local json="$WORK/oha.json"
  timeout $(($2 + 30)) oha --no-tui --output-format json -o "$json" \
    -z "${2}s" -q "$RATE" --latency-correction -c "$CONNECTIONS" \
    -m POST -T application/json -H "Authorization: Bearer $KEY" -d "${BODY_OF[$1]}" \
    "${URL[$1]}" >/dev/null
  jq -r '[.summary.requestsPerSec,
          .latencyPercentiles.p50 * 1000, .latencyPercentiles.p99 * 1000,
          ([.statusCodeDistribution | to_entries[] | select(.key != "200") | .value] | add // 0)
          + ([.errorDistribution | to_entries[] | select(.key | test("deadline") | not) | .value] | add // 0)]
         | map(tostring) | join(" ")' "$json"
}

RESULTS="$OUT/results.tsv"
printf 'load\tround\ttarget\trps\tp50_ms\tp99_ms\tbad\tproxy_cpu_us\n' >"$RESULTS"

log "warm-up (${WARMUP_SECONDS}s each)"
for t in "${TARGETS[@]}"; do closed "$t" "$WARMUP_SECONDS" >/dev/null; done

for load in closed open; do
  for r in $(seq "$ROUNDS"); do
    for t in "${TARGETS[@]}"; do
      if [[ $load == closed ]]; then
        res=$(closed "$t" "$SECONDS_PER_RUN")
      else
        res=$(open_loop "$t" "$SECONDS_PER_RUN")
      fi
      read -r rps p50 p99 bad cpu <<<"$res"
      cpu=${cpu:--}
      log "$load round $r $t: $rps req/s p50 $p50 ms p99 $p99 ms non-200 $bad proxy cpu ${cpu} us/req"
      printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$load" "$r" "$t" "$rps" "$p50" "$p99" "$bad" "$cpu" >>"$RESULTS"
    done
  done
done

# ---- summary ---------------------------------------------------------------
echo
echo "tollgate load: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
echo "closed loop: wrk -t2 -c$CONNECTIONS, ${SECONDS_PER_RUN}s x $ROUNDS rounds; open loop: oha -q $RATE --latency-correction -c$CONNECTIONS, ${SECONDS_PER_RUN}s x $ROUNDS rounds"
echo "figures are medians over rounds; ratios are per round (same round), then the median"
awk -F'\t' -v rounds="$ROUNDS" '
  function median(a, n,   i, j, t) {
    for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
    return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
  }
  NR > 1 { rps[$1,$3,$2] = $4; p50[$1,$3,$2] = $5; p99[$1,$3,$2] = $6; bad[$1,$3] += $7; if ($1 == "closed") cpu[$3,$2] = $8 }
  END {
    split("closed open", loads, " "); split("direct nginx tollgate", ts, " ")
    for (l = 1; l <= 2; l++) {
      L = loads[l]
      printf "\n%-7s %-9s %12s %10s %10s %8s\n", L, "path", "req/s", "p50 ms", "p99 ms", "non-200"
      for (k = 1; k <= 3; k++) {
        T = ts[k]
        for (r = 1; r <= rounds; r++) { a[r] = rps[L,T,r]; b[r] = p50[L,T,r]; c[r] = p99[L,T,r] }
        printf "%-7s %-9s %12.0f %10.3f %10.3f %8d\n", "", T, median(a, rounds), median(b, rounds), median(c, rounds), bad[L,T]
      }
      for (r = 1; r <= rounds; r++) {
        a[r] = rps[L,"tollgate",r] / rps[L,"nginx",r]
        b[r] = p50[L,"tollgate",r] / p50[L,"nginx",r]
        c[r] = p99[L,"tollgate",r] / p99[L,"nginx",r]
      }
      printf "%-7s tollgate/nginx: throughput %.3fx, p50 %.2fx, p99 %.2fx\n", "", median(a, rounds), median(b, rounds), median(c, rounds)
      for (r = 1; r <= rounds; r++) {
        a[r] = p99[L,"tollgate",r] - p99[L,"direct",r]
        b[r] = p99[L,"nginx",r] - p99[L,"direct",r]
        c[r] = p50[L,"tollgate",r] - p50[L,"direct",r]
      }
      printf "%-7s added over direct: tollgate p50 %+.3f ms, p99 %+.3f ms; nginx p99 %+.3f ms\n", "", median(c, rounds), median(a, rounds), median(b, rounds)
      if (L == "closed") {
        for (r = 1; r <= rounds; r++) { a[r] = cpu["nginx",r]; b[r] = cpu["tollgate",r]; c[r] = cpu["tollgate",r] / cpu["nginx",r] }
        printf "%-7s proxy CPU per request (user + system): nginx %.1f us, tollgate %.1f us, tollgate/nginx %.2fx\n", "", median(a, rounds), median(b, rounds), median(c, rounds)
      }
      if (L == "closed") { split("", x); for (r = 1; r <= rounds; r++) x[r] = rps[L,"tollgate",r] / rps[L,"nginx",r]; tp = median(x, rounds) }
      else { split("", x); for (r = 1; r <= rounds; r++) x[r] = p99[L,"tollgate",r] - p99[L,"direct",r]; added = median(x, rounds) }
    }
    printf "\ntarget: closed-loop throughput >= 0.90x nginx: %.3fx %s\n", tp, tp >= 0.9 ? "met" : "MISSED"
    printf "target: open-loop p99 added over direct <= 0.25 ms: %+.3f ms %s\n", added, added <= 0.25 ? "met" : "MISSED"
  }' "$RESULTS"
if [[ -n "${LOAD_HTTPS:-}" ]]; then
  # P7: the same gateway, the upstream behind TLS or not; ratios per round.
  awk -F'\t' '
    function median(a, n,   i, j, t) {
      for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] > a[j]; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
      return n % 2 ? a[(n+1)/2] : (a[n/2] + a[n/2+1]) / 2
    }
    NR > 1 { rps[$1,$3,$2] = $4; p99[$1,$3,$2] = $6; cpu[$1,$3,$2] = $8; if ($2 > n) n = $2 }
    END {
      split("closed open", loads, " ")
      for (l = 1; l <= 2; l++) {
        L = loads[l]
        for (r = 1; r <= n; r++) {
          a[r] = rps[L,"tollgate_https",r] / rps[L,"tollgate",r]
          b[r] = p99[L,"tollgate_https",r] - p99[L,"tollgate",r]
          if (L == "closed") c[r] = cpu[L,"tollgate_https",r] / cpu[L,"tollgate",r]
        }
        printf "%-7s https/http upstream: throughput %.3fx, p99 %+.3f ms", L, median(a, n), median(b, n)
        if (L == "closed") printf ", gateway CPU per request %.2fx", median(c, n)
        printf "\n"
      }
    }' "$RESULTS"
fi
echo
echo "raw results: $RESULTS$([[ -n "${LOAD_OUT:-}" ]] || echo ' (deleted on exit; set LOAD_OUT to keep)')"
