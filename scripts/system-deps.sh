#!/usr/bin/env bash
# Debian packages the lab and the tests use. Installed only when missing and when we can
# (root, apt available); otherwise the tests that need them say what is missing.
set -u
need=()
command -v ipmitool >/dev/null 2>&1 || need+=(ipmitool)
[ ${#need[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian packages: ${need[*]}"
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}") >/dev/null 2>&1 \
    || echo "warning: could not install ${need[*]}; tests that need them will be skipped" >&2
else
  echo "note: missing ${need[*]} (install them for the IPMI client tests)" >&2
fi
exit 0
