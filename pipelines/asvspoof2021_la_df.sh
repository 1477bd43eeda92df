#!/usr/bin/env bash
# ASVspoof 2021 LA and DF: train on ASVspoof 2019 LA train (dev for model selection), as the
# challenge prescribes, then score the 2021 LA and DF evaluation sets -> EER (pooled, on the
# official 'eval' subset, and per codec / attack), DET plots.
#
# Expected layout (2019 LA.zip, 2021 LA/DF eval tarballs and the full keys, all under DATA):
#   $DATA/LA/ASVspoof2019_LA_{train,dev}/flac/LA_{T,D}_*.flac
#   $DATA/LA/ASVspoof2019_LA_cm_protocols/ASVspoof2019.LA.cm.{train.trn,dev.trl}.txt
#   $DATA/ASVspoof2021_LA_eval/flac/LA_E_*.flac          (ASVspoof2021_LA_eval.tar.gz)
#   $DATA/ASVspoof2021_DF_eval/flac/DF_E_*.flac          (ASVspoof2021_DF_eval_part*.tar.gz)
#   $DATA/keys/LA/CM/trial_metadata.txt                  (LA-keys-full.tar.gz)
#   $DATA/keys/DF/CM/trial_metadata.txt                  (DF-keys-full.tar.gz)
#
# The 2021 keys hold the progress, eval and hidden-track trials of one audio set; the
# official results are on the 'eval' subset (column 8), which this recipe reports next to
# the pooled figures. t-DCF for 2021 LA needs the organisers' ASV scores joined to their ASV
# key; 'trainer metrics' reads ASV scores in the 2019 layouts only, so pass ASV_SCORES_LA
# (a 2019-layout ASV score file) to get it, else only EER/minDCF/Cllr are computed.
set -euo pipefail

usage() {
    cat <<EOF
usage: $(basename "$0") [-h] DATA

Run the ASVspoof 2021 LA + DF recipe on the data extracted under DATA (layout in $0).

Environment variables (defaults in brackets):
  WORK           output directory [work/asvspoof2021]
  TRACKS         tracks to evaluate, space-separated [LA DF]
  MODELS         models to train, space-separated [grcnn vgg10 lcnn]
  GMMS           GMM baselines to train, space-separated; '' for none [lfcc-gmm cqcc-gmm]
  COMPONENTS     components per GMM of the baselines [512]
  AUGMENT        augmentation recipe of the training store's augmented views ('featstore
                 build --augment'); '' or none for a clean store [TRACKS=LA: rawboost-5;
                 with DF: rawboost-3|codec (RawBoost-3 or a codec round trip per copy)]
  VIEWS          augmented copies per training utterance [1]
  JOBS           feature-extraction processes [number of CPUs]
  DEVICE         training/scoring device: auto, cpu, cuda, cuda:N [auto]
  WORKERS        DataLoader workers [4]
  EPOCHS         training epochs [the trainer's default for each model]
  FIT_ARGS       extra 'trainer fit' options []
  ASV_SCORES_LA  2019-layout ASV scores of the 2021 LA trials, for t-DCF []

Outputs: WORK/train.zarr (2019 train+dev), WORK/{LA,DF}_eval.zarr,
WORK/runs/MODEL/scores_{dev,LA_eval,DF_eval}.txt, WORK/results/MODEL_{LA,DF}*.json and DET
plots, WORK/results/fused_{LA,DF}_eval.txt(.json) and fused_{LA,DF}_eval.json.
EOF
}

# shellcheck source=pipelines/recipe_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/recipe_common.sh"
recipe_args "$@"

DATA=$1
LA19=$DATA/LA
WORK=${WORK:-work/asvspoof2021}
TRACKS=${TRACKS:-LA DF}
MODELS=${MODELS:-grcnn vgg10 lcnn}
GMMS=${GMMS-lfcc-gmm cqcc-gmm}
ASV_SCORES_LA=${ASV_SCORES_LA:-}
if [[ $TRACKS == LA ]]; then AUGMENT=${AUGMENT-rawboost-5}; else AUGMENT=${AUGMENT-rawboost-3|codec}; fi
SYSTEMS="$MODELS $GMMS"

PROTOCOLS=$LA19/ASVspoof2019_LA_cm_protocols
for d in "$LA19/ASVspoof2019_LA_train/flac" "$LA19/ASVspoof2019_LA_dev/flac"; do
    [[ -d $d ]] || { echo "error: $d not found (see the layout in $0)" >&2; exit 2; }
done
for track in $TRACKS; do
    for p in "$DATA/ASVspoof2021_${track}_eval/flac" "$DATA/keys/$track/CM/trial_metadata.txt"; do
        [[ -e $p ]] || { echo "error: $p not found (see the layout in $0)" >&2; exit 2; }
    done
done

# shellcheck disable=SC2086  # MODELS is a space-separated list on purpose
FEATURES=$(features_for $SYSTEMS)
mkdir -p "$WORK/runs" "$WORK/results" "$WORK/keys"

# Training store: 2019 train and dev only (the 2019 eval protocol is left out).
aug=()
[[ -n $AUGMENT && $AUGMENT != none ]] && aug=(--augment "$AUGMENT" --views "$VIEWS")
echo "== features ($FEATURES${AUGMENT:+; $VIEWS view(s) of $AUGMENT on train}) of" \
    "ASVspoof 2019 LA train+dev -> $WORK/train.zarr"
featstore build \
    --manifest "$PROTOCOLS/ASVspoof2019.LA.cm.train.trn.txt" \
    --manifest "$PROTOCOLS/ASVspoof2019.LA.cm.dev.trl.txt" \
    --audio-root "$LA19" --out "$WORK/train.zarr" --features "$FEATURES" --jobs "$JOBS" \
    ${aug[@]+"${aug[@]}"}

# One evaluation store per track (split "eval", labels from the keys).
for track in $TRACKS; do
    echo "== features of ASVspoof 2021 $track eval -> $WORK/${track}_eval.zarr"
    featstore build --manifest "$DATA/keys/$track/CM/trial_metadata.txt" \
        --audio-root "$DATA" --out "$WORK/${track}_eval.zarr" --features "$FEATURES" \
        --jobs "$JOBS"
    # Key of the official 'eval' subset (column 8).
    awk '$8 == "eval"' "$DATA/keys/$track/CM/trial_metadata.txt" \
        >"$WORK/keys/${track}_eval_subset.txt"
done

for model in $SYSTEMS; do
    run=$WORK/runs/$model
    echo "== train $model -> $run"
    train "$WORK/train.zarr" "$model" "$run"
    echo "== score $model on 2019 dev (for the fusion)"
    trainer score --run "$run" --split dev --device "$DEVICE"

    for track in $TRACKS; do
        scores=$run/scores_${track}_eval.txt
        echo "== score $model on 2021 $track eval"
        trainer score --run "$run" --store "$WORK/${track}_eval.zarr" --split eval \
            --out "$scores" --device "$DEVICE"

        asv=()
        [[ $track == LA && -n $ASV_SCORES_LA ]] && asv=(--asv-scores "$ASV_SCORES_LA")
        echo "== metrics $model, 2021 $track, all trials, per codec"
        trainer metrics "$scores" --protocol "$DATA/keys/$track/CM/trial_metadata.txt" \
            --by codec --json "$WORK/results/${model}_${track}_pooled.json" \
            ${asv[@]+"${asv[@]}"}
        echo "== metrics $model, 2021 $track, official eval subset, per attack"
        awk 'NR == FNR { keep[$2] = 1; next } ($2 in keep)' \
            "$WORK/keys/${track}_eval_subset.txt" "$scores" >"${scores%.txt}_subset.txt"
        trainer metrics "${scores%.txt}_subset.txt" \
            --protocol "$WORK/keys/${track}_eval_subset.txt" \
            --json "$WORK/results/${model}_${track}_eval.json" \
            --det "$WORK/results/${model}_${track}_eval_det.png" ${asv[@]+"${asv[@]}"}
    done
done

read -r -a systems <<<"$SYSTEMS"
if ((${#systems[@]} >= 2)); then
    for track in $TRACKS; do
        devs=(); evals=()
        for model in $SYSTEMS; do
            devs+=("$WORK/runs/$model/scores_dev.txt")
            evals+=("$WORK/runs/$model/scores_${track}_eval.txt")
        done
        key=$DATA/keys/$track/CM/trial_metadata.txt
        echo "== fusion of $SYSTEMS on 2021 $track, trained on 2019 dev"
        trainer fuse "${devs[@]}" --apply "${evals[@]}" --eval-protocol "$key" \
            --out "$WORK/results/fused_${track}_eval.txt"
        trainer metrics "$WORK/results/fused_${track}_eval.txt" --protocol "$key" \
            --by codec --json "$WORK/results/fused_${track}_eval.json"
    done
fi
