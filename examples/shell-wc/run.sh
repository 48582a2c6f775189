#!/bin/sh
# A Stratus process function in shell: counts lines, words and bytes of stdin.
echo "wc for $STRATUS_FUNCTION" >&2
wc | awk '{print "lines=" $1 " words=" $2 " bytes=" $3}'
