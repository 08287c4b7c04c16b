#!/usr/bin/env bash
# phi on mimic3_top50: bash recipes/phi_mimic3_top50.sh [--backbone NAME] [--profile NAME] [key=value ...] (--help)
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch.sh" phi mimic3_top50 "$@"
