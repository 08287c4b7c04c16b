#!/usr/bin/env bash
# grpo on mimic4_full: bash recipes/grpo_mimic4_full.sh [--backbone NAME] [--profile NAME] [key=value ...] (--help)
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch.sh" grpo mimic4_full "$@"
