#!/bin/sh
# Creates the secret files that compose.yaml reads, with random values:
#
#   sh deploy/compose/init-secrets.sh
#
# An existing file is kept, so running it again is safe and never rotates a
# secret behind a running stack. SPOOL_SECRETS_DIR chooses another directory
# (compose.yaml reads the same variable). The files are git-ignored.
#
# The directory is private to its owner (0700) but each file is 0644:
# Compose mounts secret files into containers as they are on disk, and the
# services read them as non-root users (Spool as 65532, PostgreSQL as
# postgres), so they must be readable by any uid inside the container.
set -eu

dir=${SPOOL_SECRETS_DIR:-$(dirname "$0")/secrets}
mkdir -p "$dir"
chmod 0700 "$dir"

rand_hex() { head -c "$1" /dev/urandom | od -An -tx1 | tr -d ' \n'; }
rand_b64() { head -c "$1" /dev/urandom | base64 | tr -d '\n'; }
# first_line FILE: the first line that is not blank or a # comment.
first_line() { grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$1" | head -n 1 | tr -d '[:space:]'; }

write() {
	if [ -e "$dir/$1" ]; then
		echo "kept    $dir/$1"
		return
	fi
	(umask 022 && printf '%s\n' "$2" >"$dir/$1.tmp" && mv "$dir/$1.tmp" "$dir/$1")
	chmod 0644 "$dir/$1"
	echo "created $dir/$1"
}

write postgres_password "$(rand_hex 24)"
# The URL must carry the same password: built from the file, kept or new.
write database_url "postgres://spool:$(first_line "$dir/postgres_password")@postgres:5432/spool?sslmode=disable"
write api_keys "$(rand_hex 32)"
# The demo one-shots' client key: the first API key.
write client.env "SPOOL_API_KEY=$(first_line "$dir/api_keys")"
write signing_keys "whsec_$(rand_b64 32)"
write grafana_admin_password "$(rand_hex 16)"
