#!/bin/sh
# Entrypoint hook of the Nextcloud image (before-starting: at every start, after any
# install or upgrade), run as www-data. Installed by telecentre-ctl from the catalogue
# (services/nextcloud/hooks/): the settings the image's variables do not cover. It never
# fails the start: the image would stop on a failed hook. A step that fails says so in
# the container's log and is tried again at the next start.
occ() { php /var/www/html/occ --no-interaction "$@"; }
warn() { echo "telecentre hook: $*" >&2; }

if occ status --output=json | grep -q '"maintenance":true'; then
    warn "maintenance mode is on: settings left as they are"
    exit 0
fi

# Background jobs run from the host's timer (docker exec ... cron.php every 5 minutes).
occ background:cron || warn "could not set background jobs to cron"

# The site's names resolve to the proxy, on the containers' private network.
occ config:system:set allow_local_remote_servers --type=boolean --value=true \
    || warn "could not allow calls to the proxy's private address"

# LAN sites: trust the site's own CA for calls to its other HTTPS names.
if [ -n "${TC_SITE_CA:-}" ] && [ -r "$TC_SITE_CA" ]; then
    occ security:certificates:import "$TC_SITE_CA" || warn "could not import the site's CA"
fi

# Office editing with the site's Collabora, when the site runs it.
if [ -n "${TC_OFFICE_URL:-}" ]; then
    if ! occ app:enable richdocuments; then
        occ app:install richdocuments \
            || warn "could not install the Office app (richdocuments): is apps.nextcloud.com reachable?"
    fi
    occ config:app:set richdocuments wopi_url --value="$TC_OFFICE_URL/" \
        && occ config:app:set richdocuments public_wopi_url --value="$TC_OFFICE_URL/" \
        && occ config:app:set richdocuments wopi_allowlist --value="$TC_WOPI_ALLOWLIST" \
        || warn "could not point the Office app at $TC_OFFICE_URL"
    occ richdocuments:activate-config \
        || warn "Collabora did not answer yet at $TC_OFFICE_URL: the Office app fetches its settings again later"
fi
exit 0
