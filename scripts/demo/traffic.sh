#!/usr/bin/env bash
# A little realistic HTTP traffic from the demo's client namespace to the web server:
# GET, POST with JSON, a chunked upload, a keep-alive series on one connection, and one
# SQL-injection-looking query string. Every request is bounded by curl's timeouts.
#
#   traffic.sh CLIENT_NS SERVER_IP:PORT
# Prints each request as it goes and, last, "sent N" (the number of HTTP requests made).
set -euo pipefail
ns=$1
server=$2
base="http://$server"
sent=0
curl_ns() { ip netns exec "$ns" curl -sS -o /dev/null -w '%{http_code}' --connect-timeout 3 --max-time 10 "$@"; }
show() { printf '  client: %-58s -> %s\n' "$1" "$2"; }

code=$(curl_ns -H 'User-Agent: demo-shop/1.0' -H 'Accept: text/html' "$base/")
show "GET /" "$code"; sent=$((sent + 1))

code=$(curl_ns "$base/products?category=books&page=2")
show "GET /products?category=books&page=2" "$code"; sent=$((sent + 1))

code=$(curl_ns -X POST -H 'Content-Type: application/json' \
  --data-binary '{"user":"alice","items":[{"sku":"B-1041","qty":2}],"coupon":"WELCOME10"}' "$base/api/orders")
show "POST /api/orders (JSON)" "$code"; sent=$((sent + 1))

upload=$(mktemp)
# ~20 KB, several TCP segments, sent with Transfer-Encoding: chunked from stdin
for i in $(seq 1 400); do printf 'line %04d: the quick brown fox jumps over the lazy dog\n' "$i"; done >"$upload"
code=$(ip netns exec "$ns" curl -sS -o /dev/null -w '%{http_code}' --connect-timeout 3 --max-time 10 \
  -H 'Content-Type: text/plain' -H 'Transfer-Encoding: chunked' -T - "$base/upload/report.txt" <"$upload")
rm -f "$upload"
show "PUT /upload/report.txt (chunked, 22 KB)" "$code"; sent=$((sent + 1))

# keep-alive: curl reuses one connection for every URL of one invocation
codes=$(ip netns exec "$ns" curl -sS --connect-timeout 3 --max-time 15 -o /dev/null -o /dev/null -o /dev/null \
  -o /dev/null -o /dev/null -w '%{http_code} ' \
  -H 'Cookie: session=7f3a9c' "$base/cart" "$base/cart/items" "$base/cart/total" "$base/account" "$base/logout")
show "GET x5 on one keep-alive connection" "$codes"; sent=$((sent + 5))

code=$(curl_ns "$base/search?q=1%27%20OR%20%271%27%3D%271%27%20--%20&sort=price")
show "GET /search?q=1' OR '1'='1' -- (SQL injection)" "$code"; sent=$((sent + 1))

code=$(curl_ns -X POST -H 'Content-Type: application/x-www-form-urlencoded' \
  --data 'username=admin&password=hunter2' "$base/login")
show "POST /login (form)" "$code"; sent=$((sent + 1))

echo "sent $sent"
