#!/usr/bin/env bash
# grpo on mimic3_top50: bash recipes/grpo_mimic3_top50.sh [--backbone NAME] [--profile NAME] [key=value ...] (--help)
exec bash "$(dirname "${BASH_SOURCE[0]}")/launch.sh" grpo mimic3_top50 "$@"
