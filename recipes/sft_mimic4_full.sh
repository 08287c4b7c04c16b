#!/usr/bin/env bash
# sft on mimic4_full: bash recipes/sft_mimic4_full.sh [--backbone NAME] [--profile NAME] [key=value ...] (--help)
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch.sh" sft mimic4_full "$@"
