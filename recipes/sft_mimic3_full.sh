#!/usr/bin/env bash
# sft on mimic3_full: bash recipes/sft_mimic3_full.sh [--backbone NAME] [--profile NAME] [key=value ...] (--help)
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch.sh" sft mimic3_full "$@"
