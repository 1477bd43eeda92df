# Shared by the recipes in this folder (sourced, not run): which store features each model
# reads, and how a model is trained resumably. Uses the recipes' DEVICE, WORKERS, EPOCHS and
# FIT_ARGS settings.

# The store features model $1 reads (comma-separated).
features_of() {
    case $1 in
        grcnn) echo mgd,logmel ;;
        grcnn-mgd) echo mgd ;;
        grcnn-logmel) echo logmel ;;
        vgg10) echo fbank ;;
        lcnn) echo lfcc ;;
        *) echo "error: unknown model $1" >&2; exit 2 ;;
    esac
}

# The union of the features of the models given as arguments, in first-seen order.
features_for() {
    local m
    for m in "$@"; do features_of "$m" | tr , '\n'; done | awk '!seen[$0]++' | paste -sd, -
}

# fit_model STORE MODEL RUN: train MODEL on STORE into RUN, resuming an interrupted run.
fit_model() {
    local fit=(trainer fit "$1" --model "$2" --out "$3" --device "$DEVICE" --workers "$WORKERS")
    [[ -n $EPOCHS ]] && fit+=(--epochs "$EPOCHS")
    [[ -f $3/last.pt ]] && fit+=(--resume)
    # shellcheck disable=SC2206  # FIT_ARGS is split into options on purpose
    fit+=($FIT_ARGS)
    "${fit[@]}"
}
