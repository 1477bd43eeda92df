#!/usr/bin/env bash
# ASVspoof 2019 LA: features (+ RawBoost-augmented views of train) -> GRCNN (paper
# configuration) + VGG10/fbank and LCNN/lfcc, and the organisers' LFCC-GMM and CQCC-GMM
# baselines -> dev and eval scores -> EER, min t-DCF (organisers' ASV scores), DET plots ->
# each system calibrated on dev, and all systems fused on dev (minDCF, actDCF, Cllr).
#
# Expected layout (the extracted LA.zip of the ASVspoof 2019 database):
#   $DATA/LA/ASVspoof2019_LA_train/flac/LA_T_*.flac
#   $DATA/LA/ASVspoof2019_LA_dev/flac/LA_D_*.flac
#   $DATA/LA/ASVspoof2019_LA_eval/flac/LA_E_*.flac
#   $DATA/LA/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.{train.trn,dev.trl,eval.trl}.txt
#   $DATA/LA/ASVspoof2019_LA_asv_scores/ASVspoof2019.LA.asv.{dev,eval}.gi.trl.scores.txt
#
# Every step is resumable: re-running skips a complete store, continues an interrupted
# training from its last epoch and rewrites the scores and metrics.
set -euo pipefail

usage() {
    cat <<EOF
usage: $(basename "$0") [-h] DATA

Run the ASVspoof 2019 LA recipe on the database extracted under DATA (DATA/LA/...).

Environment variables (defaults in brackets):
  WORK       output directory [work/asvspoof2019_la]
  MODELS     models to train, space-separated [grcnn vgg10 lcnn]
  GMMS       GMM baselines to train, space-separated; '' for none [lfcc-gmm cqcc-gmm]
  COMPONENTS components per GMM of the baselines [512]
  AUGMENT    augmentation recipe of the train split's augmented views ('featstore build
             --augment'); '' or none for a clean store [rawboost-5: RawBoost LnL + ISD
             in series, the usual choice for LA]
  VIEWS      augmented copies per training utterance [1]
  JOBS       feature-extraction processes [number of CPUs]
  DEVICE     training/scoring device: auto, cpu, cuda, cuda:N [auto]
  WORKERS    DataLoader workers [4]
  EPOCHS     training epochs [the trainer's default for each model]
  FORMAT     store format: zarr or hdf5 [zarr]
  FIT_ARGS   extra 'trainer fit' options, e.g. "--batch-size 64 --patience 5" []

Outputs: WORK/store.zarr, WORK/runs/MODEL/{best.pt,metrics.csv,scores_{dev,eval}.txt},
WORK/results/MODEL_{dev,eval}.json and MODEL_eval_det.png,
WORK/results/MODEL_eval_calibrated.txt(.json) and, with two systems or more,
WORK/results/fused_eval.txt(.json), fused_eval.json and fused_eval_det.png.
EOF
}

# shellcheck source=pipelines/recipe_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/recipe_common.sh"
recipe_args "$@"

DATA=$1
LA=$DATA/LA
WORK=${WORK:-work/asvspoof2019_la}
MODELS=${MODELS:-grcnn vgg10 lcnn}
GMMS=${GMMS-lfcc-gmm cqcc-gmm}
AUGMENT=${AUGMENT-rawboost-5}
FORMAT=${FORMAT:-zarr}
SYSTEMS="$MODELS $GMMS"

PROTOCOLS=$LA/ASVspoof2019_LA_cm_protocols
ASV_DEV=$LA/ASVspoof2019_LA_asv_scores/ASVspoof2019.LA.asv.dev.gi.trl.scores.txt
ASV_EVAL=$LA/ASVspoof2019_LA_asv_scores/ASVspoof2019.LA.asv.eval.gi.trl.scores.txt

for d in "$PROTOCOLS" "$LA/ASVspoof2019_LA_train/flac" "$LA/ASVspoof2019_LA_dev/flac" \
    "$LA/ASVspoof2019_LA_eval/flac"; do
    [[ -d $d ]] || { echo "error: $d not found (see the layout in $0)" >&2; exit 2; }
done

# shellcheck disable=SC2086  # MODELS is a space-separated list on purpose
FEATURES=$(features_for $SYSTEMS)

if [[ $FORMAT == hdf5 ]]; then STORE=$WORK/store.h5; else STORE=$WORK/store.zarr; fi
mkdir -p "$WORK/runs" "$WORK/results"

aug=()
[[ -n $AUGMENT && $AUGMENT != none ]] && aug=(--augment "$AUGMENT" --views "$VIEWS")
echo "== features ($FEATURES${AUGMENT:+; $VIEWS view(s) of $AUGMENT on train}) -> $STORE"
featstore build --manifest "$PROTOCOLS" --audio-root "$LA" --out "$STORE" \
    --features "$FEATURES" --jobs "$JOBS" ${aug[@]+"${aug[@]}"}
featstore info "$STORE"

for model in $SYSTEMS; do
    run=$WORK/runs/$model
    echo "== train $model -> $run"
    train "$STORE" "$model" "$run"

    for split in dev eval; do
        echo "== score $model on $split"
        trainer score --run "$run" --split "$split" --device "$DEVICE"
    done

    echo "== metrics $model"
    asv_dev=(); asv_eval=()
    [[ -f $ASV_DEV ]] && asv_dev=(--asv-scores "$ASV_DEV")
    [[ -f $ASV_EVAL ]] && asv_eval=(--asv-scores "$ASV_EVAL")
    trainer metrics "$run/scores_dev.txt" ${asv_dev[@]+"${asv_dev[@]}"} \
        --json "$WORK/results/${model}_dev.json"
    trainer metrics "$run/scores_eval.txt" ${asv_eval[@]+"${asv_eval[@]}"} \
        --json "$WORK/results/${model}_eval.json" --det "$WORK/results/${model}_eval_det.png"

    echo "== calibrate $model on dev"
    trainer calibrate "$run/scores_dev.txt" --apply "$run/scores_eval.txt" \
        --out "$WORK/results/${model}_eval_calibrated.txt"
done

devs=(); evals=()
for model in $SYSTEMS; do
    devs+=("$WORK/runs/$model/scores_dev.txt")
    evals+=("$WORK/runs/$model/scores_eval.txt")
done
if ((${#evals[@]} >= 2)); then
    echo "== fusion of $SYSTEMS, trained on dev"
    trainer fuse "${devs[@]}" --apply "${evals[@]}" --out "$WORK/results/fused_eval.txt"
    trainer metrics "$WORK/results/fused_eval.txt" --json "$WORK/results/fused_eval.json" \
        --det "$WORK/results/fused_eval_det.png"
fi

echo "== all models on eval"
asv=(); [[ -f $ASV_EVAL ]] && asv=(--asv-scores "$ASV_EVAL")
trainer metrics "${evals[@]}" ${asv[@]+"${asv[@]}"} --json "$WORK/results/all_eval.json" \
    --det "$WORK/results/all_eval_det.png"
