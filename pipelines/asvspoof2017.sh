#!/usr/bin/env bash
# ASVspoof 2017 V2 (replay): features -> GRCNN + VGG10/fbank and LCNN/lfcc baselines ->
# dev and eval scores -> EER (the 2017 metric; no t-DCF), per replay configuration, DET plots.
#
# Expected layout (the extracted ASVspoof 2017 V2 zips, all under DATA):
#   $DATA/ASVspoof2017_V2_train/T_*.wav
#   $DATA/ASVspoof2017_V2_dev/D_*.wav
#   $DATA/ASVspoof2017_V2_eval/E_*.wav
#   $DATA/protocol_V2/ASVspoof2017_V2_{train.trn,dev.trl,eval.trl}.txt
#
# Utterance ids drop the '.wav' of the protocol (T_1000001); the attack column of the scores
# is the replay configuration ENVIRONMENT-PLAYBACK-RECORDING (e.g. E01-P01-R01).
set -euo pipefail

usage() {
    cat <<EOF
usage: $(basename "$0") [-h] DATA

Run the ASVspoof 2017 V2 recipe on the database extracted under DATA (layout in $0).

Environment variables (defaults in brackets):
  WORK       output directory [work/asvspoof2017]
  MODELS     models to train, space-separated [grcnn vgg10 lcnn]
  JOBS       feature-extraction processes [number of CPUs]
  DEVICE     training/scoring device: auto, cpu, cuda, cuda:N [auto]
  WORKERS    DataLoader workers [4]
  EPOCHS     training epochs [the trainer's default for each model]
  FIT_ARGS   extra 'trainer fit' options, e.g. "--balance" []
  AUGMENT    augmentation recipe of the train split's augmented views ('featstore build
             --augment'), e.g. "reverb|noise" [none: replay has no field-standard recipe]
  VIEWS      augmented copies per training utterance, with AUGMENT [1]

Outputs: WORK/store.zarr, WORK/runs/MODEL/scores_{dev,eval}.txt,
WORK/results/MODEL_{dev,eval}.json and MODEL_eval_det.png.
EOF
}

# shellcheck source=pipelines/recipe_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/recipe_common.sh"
recipe_args "$@"

DATA=$1
WORK=${WORK:-work/asvspoof2017}
MODELS=${MODELS:-grcnn vgg10 lcnn}
AUGMENT=${AUGMENT-}

PROTOCOLS=$DATA/protocol_V2
for d in "$PROTOCOLS" "$DATA/ASVspoof2017_V2_train" "$DATA/ASVspoof2017_V2_dev" \
    "$DATA/ASVspoof2017_V2_eval"; do
    [[ -d $d ]] || { echo "error: $d not found (see the layout in $0)" >&2; exit 2; }
done

# shellcheck disable=SC2086  # MODELS is a space-separated list on purpose
FEATURES=$(features_for $MODELS)
STORE=$WORK/store.zarr
mkdir -p "$WORK/runs" "$WORK/results"

aug=()
[[ -n $AUGMENT && $AUGMENT != none ]] && aug=(--augment "$AUGMENT" --views "$VIEWS")
echo "== features ($FEATURES${AUGMENT:+; $VIEWS view(s) of $AUGMENT on train}) -> $STORE"
featstore build --manifest "$PROTOCOLS" --audio-root "$DATA" --out "$STORE" \
    --features "$FEATURES" --jobs "$JOBS" ${aug[@]+"${aug[@]}"}
featstore info "$STORE"

for model in $MODELS; do
    run=$WORK/runs/$model
    echo "== train $model -> $run"
    fit_model "$STORE" "$model" "$run"

    for split in dev eval; do
        echo "== score $model on $split"
        trainer score --run "$run" --split "$split" --device "$DEVICE"
        trainer metrics "$run/scores_$split.txt" --json "$WORK/results/${model}_$split.json" \
            --det "$WORK/results/${model}_${split}_det.png"
    done
done
