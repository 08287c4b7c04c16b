#!/usr/bin/env bash
# phi on mimic4_top50: bash recipes/phi_mimic4_top50.sh [--backbone NAME] [--profile NAME] [key=value ...] (--help)
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch.sh" phi mimic4_top50 "$@"
