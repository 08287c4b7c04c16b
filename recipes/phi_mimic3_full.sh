#!/usr/bin/env bash
# phi on mimic3_full: bash recipes/phi_mimic3_full.sh [--backbone NAME] [--profile NAME] [key=value ...] (--help)
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch.sh" phi mimic3_full "$@"
