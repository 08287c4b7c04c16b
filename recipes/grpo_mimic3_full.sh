#!/usr/bin/env bash
# grpo on mimic3_full: bash recipes/grpo_mimic3_full.sh [--backbone NAME] [--profile NAME] [key=value ...] (--help)
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch.sh" grpo mimic3_full "$@"
