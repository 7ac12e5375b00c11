#!/usr/bin/env bash
# The README's first command: set up .venv with what running needs (scripts/test.sh adds the dev
# tools), create a demo PKI in pki/ if it has no CA (CA, server certificate for localhost, bundles
# for alice and bob in pki/users/), then run the server in the foreground on 127.0.0.1 port 7443
# (MTLSCHAT_HOST, MTLSCHAT_PORT override; extra arguments go to `mtlschat server`).
# Needs only python3 (>= 3.11) and git. Safe to run again: existing files are kept.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
"$root/scripts/setup.sh" --runtime
mtlschat=(.venv/bin/mtlschat)
pki="${MTLSCHAT_PKI:-pki}"
port="${MTLSCHAT_PORT:-7443}"
host="${MTLSCHAT_HOST:-127.0.0.1}"  # the demo is for this machine until you open it up

if [ ! -f "$pki/ca.crt" ]; then
  echo "quickstart: creating a demo CA in $pki/"
  "${mtlschat[@]}" ca init --pki "$pki" --name "mtlschat demo CA"
fi
if [ ! -f "$pki/server.pem" ]; then
  "${mtlschat[@]}" ca issue --pki "$pki" --server localhost 127.0.0.1 ::1
fi
mkdir -p "$pki/users"
for user in alice bob; do
  if [ ! -f "$pki/users/$user.pem" ]; then
    # A bundle deleted while its certificate is still valid: the name is taken, so renew it
    # (revoking the lost one) rather than stop. Any other failure is shown as it was.
    if ! err="$("${mtlschat[@]}" ca issue "$user" --pki "$pki" --out "$pki/users/$user.pem" 2>&1)"; then
      if ! "${mtlschat[@]}" ca renew "$user" --pki "$pki" --out "$pki/users/$user.pem" --revoke-old; then
        echo "$err" >&2
        exit 1
      fi
    else
      echo "$err"
    fi
  fi
done

q_root="$(printf '%q' "$root")"  # a path with spaces must still paste as one command
q_pki="$(printf '%q' "$pki")"
cat <<EOF

  mtlschat is starting on port $port. In another terminal, join as alice:

    cd $q_root && .venv/bin/mtlschat client --cert $q_pki/users/alice.pem localhost:$port

  and as bob in a third one (--cert $q_pki/users/bob.pem). Ctrl-C here stops the server.

  It listens on $host only. To let other machines join, give the server a certificate for the
  name they will type, then listen on every interface:

    .venv/bin/mtlschat ca issue --pki $q_pki --force --server localhost 127.0.0.1 ::1 $(hostname)
    scripts/quickstart.sh --host 0.0.0.0

EOF
exec "${mtlschat[@]}" server --pki "$pki" --host "$host" --port "$port" "$@"
