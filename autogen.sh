#!/bin/sh
# Regenerate the build system: configure, Makefile.in and the aux scripts.
# Needs autoconf, automake and pkg-config (for pkg.m4).
set -e
cd "$(dirname "$0")"
autoreconf --install --force --warnings=all
echo "Now run ./configure (see ./configure --help), then make."
