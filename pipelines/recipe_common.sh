# Shared by the recipes in this folder (sourced, not run): the command-line check, the
# settings every recipe takes from the environment, which store features each model reads,
# and how a model is trained resumably.

# recipe_args "$@": exactly one argument (the data directory); otherwise the recipe's usage
# (its own `usage` function), exit 0 for -h/--help and 2 for anything else.
recipe_args() {
    if [[ $# -ne 1 || $1 == -h || $1 == --help ]]; then
        usage
        [[ $# -eq 1 && ($1 == -h || $1 == --help) ]] && exit 0
        exit 2
    fi
}

# Settings shared by every recipe (see each recipe's usage).
JOBS=${JOBS:-$(nproc 2>/dev/null || echo 2)}
DEVICE=${DEVICE:-auto}
WORKERS=${WORKERS:-4}
EPOCHS=${EPOCHS:-}
FIT_ARGS=${FIT_ARGS:-}
VIEWS=${VIEWS:-1}             # augmented copies per training utterance (with AUGMENT)
COMPONENTS=${COMPONENTS:-512} # components per GMM of the GMM baselines (the official 512)

# The store features model $1 reads (comma-separated).
features_of() {
    case $1 in
        grcnn) echo mgd,logmel ;;
        grcnn-mgd) echo mgd ;;
        grcnn-logmel) echo logmel ;;
        vgg10) echo fbank ;;
        lcnn) echo lfcc ;;
        lfcc-gmm) echo lfcc ;;
        cqcc-gmm) echo cqcc ;;
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

# is_gmm MODEL: whether MODEL is one of the official GMM baselines (no epochs, no device).
is_gmm() {
    [[ $1 == *-gmm ]]
}

# fit_gmm STORE MODEL RUN: train the GMM baseline MODEL (in one go; a finished run is kept).
fit_gmm() {
    local fit=(trainer fit "$1" --model "$2" --out "$3" --components "$COMPONENTS")
    if [[ -f $3/last.pt ]]; then
        echo "$3 already holds a trained $2; kept"
        return 0
    fi
    "${fit[@]}"
}

# train STORE MODEL RUN: fit_gmm for the GMM baselines, fit_model for the networks.
train() {
    if is_gmm "$2"; then fit_gmm "$@"; else fit_model "$@"; fi
}
