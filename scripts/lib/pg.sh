# Shared by the benchmark scripts: a throwaway PostgreSQL 15 cluster under $W/pg on 127.0.0.1
# (initdb defaults, plus what docs/postgresql.md requires: fsync=on, synchronous_commit=on,
# stated explicitly), run as the postgres user when the script runs as root.
#   start_pg            initdb + start; sets $pgport; creates the keysafe role
#   stop_pg             fast shutdown (for the EXIT trap)
#   psql_ ARGS...       psql as the superuser
#   free_port           a free TCP port on 127.0.0.1
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
psql_() { as_pg "$pgbin/psql" -h "$W/pg" -p "$pgport" -U postgres -qAt "$@"; }
start_pg() {
  mkdir "$W/pg"; [ "$(id -u)" = 0 ] && chown postgres:postgres "$W/pg"
  as_pg "$pgbin/initdb" -D "$W/pg" -U postgres -A trust -E UTF8 --no-locale >/dev/null
  pgport=$(free_port)
  cat >> "$W/pg/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $pgport
unix_socket_directories = '$W/pg'
fsync = on
synchronous_commit = on
CONF
  as_pg "$pgbin/pg_ctl" -D "$W/pg" -l "$W/pg/log" -w start >/dev/null
  psql_ -c "CREATE ROLE keysafe LOGIN"
  echo "# $(psql_ -c "SELECT version()")"
}
stop_pg() { as_pg "$pgbin/pg_ctl" -D "$W/pg" -m fast stop >/dev/null 2>&1 || true; }
