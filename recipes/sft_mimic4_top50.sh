#!/usr/bin/env bash
# sft on mimic4_top50: bash recipes/sft_mimic4_top50.sh [--backbone NAME] [--profile NAME] [key=value ...] (--help)
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch.sh" sft mimic4_top50 "$@"
