#!/bin/bash
# Entry point of the PostgreSQL stand-in image that test/docker builds from
# Debian's postgresql package, because no image can be pulled there. It keeps
# the part of the official postgres image's contract that compose.yaml
# relies on:
#   POSTGRES_USER (default postgres), POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE,
#   POSTGRES_DB (default: the user), data in PGDATA=/var/lib/postgresql/data,
#   initialised only when empty, scram-sha-256 over TCP on port 5432, the
#   server runs as the postgres user, /docker-entrypoint-initdb.d/*.sql|*.sh.
set -Eeuo pipefail

# file_env VAR [DEFAULT]: VAR from the environment or from the file named by VAR_FILE.
file_env() {
	local var=$1 file_var=${1}_FILE def=${2:-} val=
	if [ -n "${!var:-}" ] && [ -n "${!file_var:-}" ]; then
		echo >&2 "error: both $var and $file_var are set (they are exclusive)"
		exit 1
	fi
	if [ -n "${!var:-}" ]; then
		val=${!var}
	elif [ -n "${!file_var:-}" ]; then
		val=$(<"${!file_var}")
	else
		val=$def
	fi
	export "$var"="$val"
	unset "$file_var"
}

if [ "${1:0:1}" = '-' ]; then
	set -- postgres "$@"
fi

if [ "$1" = postgres ] && [ "$(id -u)" = 0 ]; then
	mkdir -p "$PGDATA" /var/run/postgresql
	chown postgres:postgres "$PGDATA" /var/run/postgresql
	chmod 0700 "$PGDATA"
	chmod 3777 /var/run/postgresql
	exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

if [ "$1" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
	file_env POSTGRES_PASSWORD
	file_env POSTGRES_USER postgres
	file_env POSTGRES_DB "$POSTGRES_USER"
	if [ -z "$POSTGRES_PASSWORD" ] && [ "${POSTGRES_HOST_AUTH_METHOD:-}" != trust ]; then
		echo >&2 "error: the database is uninitialised and no password is given: set POSTGRES_PASSWORD or POSTGRES_PASSWORD_FILE"
		exit 1
	fi
	auth=${POSTGRES_HOST_AUTH_METHOD:-scram-sha-256}
	initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
		--auth-local=trust --auth-host="$auth" --encoding=UTF8 --locale=C.UTF-8 -D "$PGDATA" >/dev/null
	printf '\nhost all all all %s\n' "$auth" >>"$PGDATA/pg_hba.conf"
	printf "\nlisten_addresses = '*'\n" >>"$PGDATA/postgresql.conf"

	# A temporary server on the Unix socket only, so nothing connects over
	# TCP (and pg_isready -h 127.0.0.1 stays false) until setup is done.
	pg_ctl -D "$PGDATA" -o "-c listen_addresses=''" -w start >/dev/null
	export PGUSER=$POSTGRES_USER PGDATABASE=postgres
	if [ "$POSTGRES_DB" != postgres ]; then
		psql -v ON_ERROR_STOP=1 -q --set db="$POSTGRES_DB" <<<'CREATE DATABASE :"db";'
	fi
	for f in /docker-entrypoint-initdb.d/*; do
		case "$f" in
		*.sh)
			echo "running $f"
			# shellcheck source=/dev/null
			. "$f"
			;;
		*.sql) echo "running $f" && psql -v ON_ERROR_STOP=1 -q -d "$POSTGRES_DB" -f "$f" ;;
		esac
	done
	pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
	unset PGUSER PGDATABASE
	echo "PostgreSQL init process complete; ready for start up."
fi

exec "$@"
