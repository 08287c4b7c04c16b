#!/usr/bin/env bash
# phi on mimic4_full: bash recipes/phi_mimic4_full.sh [--backbone NAME] [--profile NAME] [key=value ...] (--help)
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch.sh" phi mimic4_full "$@"
