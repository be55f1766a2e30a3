# Sourced by test.sh and local-run.sh: starts moto from the project venv on a free loopback port, exports the
# standard AWS variables pointing at it, and stops it when the calling script exits.
start_moto() {
  local port log
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  log="$(mktemp -t moto.XXXXXX.log)"
  .venv/bin/python infra/scripts/moto_server.py 127.0.0.1 "$port" >"$log" 2>&1 &
  MOTO_PID=$!
  trap 'kill "$MOTO_PID" 2>/dev/null || true' EXIT
  for _ in $(seq 1 150); do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      export AWS_ENDPOINT_URL="http://127.0.0.1:$port" AWS_REGION=us-east-1 AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
      echo "moto on 127.0.0.1:$port" >&2
      return 0
    fi
    if ! kill -0 "$MOTO_PID" 2>/dev/null; then
      echo "moto failed to start:" >&2; cat "$log" >&2; return 1
    fi
    sleep 0.2
  done
  echo "moto did not answer on 127.0.0.1:$port within 30 s" >&2
  return 1
}
