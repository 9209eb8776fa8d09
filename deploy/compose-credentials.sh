#!/bin/sh
# deploy/compose.yaml's one-off `credentials` step: as the deployment's CA machine would, make
# the MPC CA and the site API CA with every certificate, and every platform process's key
# service caller key, in $CREDENTIALS (./credentials); then lay out each site's part, and the
# control plane's, in a folder of its own that its containers alone mount:
#
#   mpc/, site-api/         the two CAs' folders: ca.key is in each (keep them offline after)
#   callers/                every caller's key (the demo pins their public halves)
#   control/                the web tier's: site-api-ca.crt, caller.key (`web`), and
#                           storage-writer/{tls.crt, tls.key}, with which it stores dataset
#                           files at the storage receivers
#   sites/<site>/           a site's: site-api/{ca.crt, sites/<site>/}, caller.key
#                           (`site.<site>`), broker-url (its own broker user's), and mpc/: an
#                           owners' site ca.crt, every party's parties/<party>/tls.crt (no key)
#                           and its senders/<site>/; a party ca.crt and its own
#                           parties/<site>/; a TEE host none
#   sites/storage-<code>/   a jurisdiction's storage receiver's: site-api/{ca.crt,
#                           storage/<code>/}, its server certificate for its container's name
#   broker/definitions.json the broker's users, passwords hashed: the control plane's (as its
#                           CELERY_BROKER_URL names it) and each site's (new passwords each run:
#                           restart the broker and the sites afterwards)
#
# Each site's folder is made again on every run, from the CAs' folders, so it holds exactly
# its part (deploy/README.md, "Certificates"). Sites named by OWNER_SITES, TEE_SITES and
# PARTY_SITES; the storage receivers by STORAGE_RECEIVERS (CODE=host, the host also its
# folder's name); the site API's host name by SITE_API_HOST, the broker's by BROKER_HOST and its
# virtual host by BROKER_VHOST.
set -eu

out=${CREDENTIALS:?name the credentials folder}
export MPC_CREDENTIALS_DIR="$out/mpc"
export CLEANROOM_SITE_API_CREDENTIALS_DIR="$out/site-api"
export CLEANROOM_KEY_SERVICE_CALLER_KEYS="$out/callers"
export CLEANROOM_KEY_SERVICE_CALLER_KEY="$out/callers/web.key"
umask 077

python manage.py mpc_credentials
storage=""
for receiver in ${STORAGE_RECEIVERS:?name the storage receivers}; do
  storage="$storage --storage $receiver"
done
# shellcheck disable=SC2086 # one argument per word
python manage.py site_certificates --server-name "${SITE_API_HOST:?name the site API host}" \
  $storage
python manage.py shell --no-imports -c \
  "from jobs.demo.key_services import ensure_caller_keys; ensure_caller_keys()"

copy() {  # copy FILE TO MODE
  install -D -m "$3" "$1" "$2"
}

rm -rf "$out/control"
copy "$out/site-api/ca.crt" "$out/control/site-api-ca.crt" 0644
copy "$out/callers/web.key" "$out/control/caller.key" 0600
copy "$out/site-api/storage-writer/tls.crt" "$out/control/storage-writer/tls.crt" 0644
copy "$out/site-api/storage-writer/tls.key" "$out/control/storage-writer/tls.key" 0600

site_folder() {  # site_folder SITE: its site API certificate and key, its caller key
  folder="$out/sites/$1"
  rm -rf "$folder"
  copy "$out/site-api/ca.crt" "$folder/site-api/ca.crt" 0644
  copy "$out/site-api/sites/$1/tls.crt" "$folder/site-api/sites/$1/tls.crt" 0644
  copy "$out/site-api/sites/$1/tls.key" "$folder/site-api/sites/$1/tls.key" 0600
  copy "$out/callers/site.$1.key" "$folder/caller.key" 0600
}

for site in $OWNER_SITES; do
  site_folder "$site"
  copy "$out/mpc/ca.crt" "$folder/mpc/ca.crt" 0644
  for party in $PARTY_SITES; do
    copy "$out/mpc/parties/$party/tls.crt" "$folder/mpc/parties/$party/tls.crt" 0644
  done
  copy "$out/mpc/senders/$site/tls.crt" "$folder/mpc/senders/$site/tls.crt" 0644
  copy "$out/mpc/senders/$site/tls.key" "$folder/mpc/senders/$site/tls.key" 0600
done

for site in $TEE_SITES; do
  site_folder "$site"
done

for site in $PARTY_SITES; do
  site_folder "$site"
  copy "$out/mpc/ca.crt" "$folder/mpc/ca.crt" 0644
  copy "$out/mpc/parties/$site/tls.crt" "$folder/mpc/parties/$site/tls.crt" 0644
  for key in tls.key share.key; do
    copy "$out/mpc/parties/$site/$key" "$folder/mpc/parties/$site/$key" 0600
  done
done

for receiver in $STORAGE_RECEIVERS; do
  code=$(echo "${receiver%%=*}" | tr '[:upper:]' '[:lower:]')
  folder="$out/sites/${receiver#*=}"
  rm -rf "$folder"
  copy "$out/site-api/ca.crt" "$folder/site-api/ca.crt" 0644
  copy "$out/site-api/storage/$code/tls.crt" "$folder/site-api/storage/$code/tls.crt" 0644
  copy "$out/site-api/storage/$code/tls.key" "$folder/site-api/storage/$code/tls.key" 0600
done

# Each site's own broker user, reaching its own queue alone, its URL in its folder (broker-url),
# and the control plane's user: RabbitMQ definitions, which the broker imports when it starts.
python manage.py site_broker_users --broker-host "${BROKER_HOST:?}" --vhost "${BROKER_VHOST:?}" \
  --definitions "$out/broker/definitions.json" --urls-in "$out/sites" \
  $OWNER_SITES $TEE_SITES $PARTY_SITES

echo "Each site's part: $out/sites/<site>/; the web tier's: $out/control/."
