# Tell the cluster about the new .deb: tandem's "generic" source, a
# Standard Webhooks POST signed with TANDEM_WEBHOOK_SECRET (whsec_...).
set -eu
: "${TANDEM_DEB_BASE_URL:?set TANDEM_DEB_BASE_URL to the URL the cluster downloads dist/ from}"
deb=$(ls dist/*.deb | head -n 1)
file=${deb##*/}
pkg=$(dpkg-deb -f "$deb" Package)
ver=$(dpkg-deb -f "$deb" Version)
sum=$(sha256sum "$deb" | cut -d ' ' -f 1)
url="${TANDEM_DEB_BASE_URL%/}/$file"
sigurl=""
if [ -f "$deb.sig" ]; then sigurl="$url.sig"; fi
body=$(printf '{"package":"%s","version":"%s","url":"%s","sha256":"%s","signature_url":"%s","ref":"%s","ref_type":"%s","commit":"%s","project":"%s"}' \
  "$pkg" "$ver" "$url" "$sum" "$sigurl" "$TANDEM_REF" "$TANDEM_REF_TYPE" "$TANDEM_COMMIT" "$TANDEM_PROJECT")
id=$(cat /proc/sys/kernel/random/uuid)
ts=$(date +%s)
key=$(printf '%s' "${TANDEM_WEBHOOK_SECRET#whsec_}" | base64 -d | od -An -v -tx1 | tr -d ' \n')
sig=$(printf '%s.%s.%s' "$id" "$ts" "$body" | openssl dgst -sha256 -mac HMAC -macopt "hexkey:$key" -binary | base64 | tr -d '\n')
# A retry carries the same webhook-id: the cluster answers it and does nothing more.
curl --fail-with-body -sS --retry 3 --retry-all-errors \
  -H "webhook-id: $id" -H "webhook-timestamp: $ts" -H "webhook-signature: v1,$sig" \
  -H 'content-type: application/json' --data-binary "$body" "$TANDEM_WEBHOOK_URL"
echo
echo "announced $pkg $ver ($sum) to $TANDEM_WEBHOOK_URL"
