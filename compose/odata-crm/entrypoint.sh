#!/bin/sh
# First start: create the CRM's database (tables and the seed leads of db/data). Later starts keep it.
set -e
if [ ! -f "$CDS_REQUIRES_DB_CREDENTIALS_URL" ]; then
  node_modules/.bin/cds-deploy
fi
exec node_modules/.bin/cds-serve
