# Real competing-risk data for the model benchmarks (issue 4 part 5, issue 10): export + R models.
#
# Exports four public competing-risk data sets that ship with Debian's R packages, with 20
# seeded 70/30 train/test splits each, fits riskRegression's cause-specific Cox (CSC) and
# Fine-Gray (FGR) models on every training split and writes their predicted cumulative
# incidences (both causes) on the test split at the set's horizons. The Python side
# (score_real_data.py) fits any grid-CIF model on the same splits and scores every model with
# the same metric code (training/metrics.py). Nothing here is random except the splits
# (set.seed per data set); CSC and FGR are deterministic, so a rerun rewrites identical files.
#
# Data sets (survival: LGPL (>= 2); riskRegression: GPL (>= 2); all are public study data
# distributed with those packages). In every set: status 0 = censored, 1 = cause 1, 2 = cause 2;
# time in months (days / (365.25 / 12) where the source is in days).
# - colon (survival::colon; Moertel et al. 1990 adjuvant trial). Two rows per patient:
#   etype 1 = recurrence, etype 2 = death. Cause 1 = recurrence, at the recurrence time;
#   cause 2 = death without recurrence, at the death time; 0 = censored at the last follow-up
#   (the etype-2 row's time). Deaths after a recurrence are not events (the recurrence came
#   first). Rows with missing nodes or differ dropped. Covariates: rx (2 dummies), sex, age,
#   obstruct, perfor, adhere, nodes, differ, extent, surg, node4.
# - melanoma (riskRegression::Melanoma; Andersen et al. 1993): cause 1 = death from melanoma,
#   cause 2 = death from other causes. Covariates: sex, age, log thickness, ulceration,
#   epithelioid cells, and invasion level (0-2) and ici (0-3) as ordinal scores (see
#   melanoma_cr: as dummies the cause-2 Cox fit diverged on some splits).
# - pbc (survival::pbc; Mayo Clinic primary biliary cholangitis, Dickson et al. 1989): all 418
#   patients (312 trial + 106 followed), 2 without prothrombin time dropped. Cause 1 = death,
#   cause 2 = liver transplantation (the competing event: a treatment decision that removes the
#   patient from the risk of dying of the untreated disease; death is the clinical endpoint of
#   the study and of the Mayo risk model; transplant is the rare cause, 6 %). Covariates: the
#   Mayo model's (age, edema 0/0.5/1, log bilirubin, log albumin, log prothrombin time) and
#   sex: a few smooth effects. They are measured in all 418 patients; the trial-only labs are
#   not used.
# - mgus2 (survival::mgus2; Kyle et al. 2002, monoclonal gammopathy of undetermined
#   significance): cause 1 = progression to a plasma cell malignancy (PCM, the rare cause of
#   interest, 8 %), at ptime; cause 2 = death without PCM, at futime; 0 = alive without PCM at
#   last contact. Coding as in survival's "compete" vignette. Times are already months.
#   Covariates: age, sex, haemoglobin, creatinine, M-spike size; rows with a missing one dropped.
#   No subsampling (n = 1338).
#
# Horizons, one rule for every set and cause: the 25th, 50th and 75th percentiles of the
# observed event times of that cause, rounded to whole months, so that each horizon has cases
# of the cause scored before it and after it whatever the set's time scale (quartiles of all
# events would put a rare cause's first horizon where it has almost no cases). R predicts and
# Python scores each cause at its own three horizons. Models on the Python side use a 1-month
# grid up to the set's largest horizon (datasets.csv is the one source of horizons and grid for
# the Python side). The grid's end censors later follow-up for those models only (as the
# product's own 60-month grid does); the R models see all follow-up.
#
# Files written to benchmarks/real_data/data/ (gzip-compressed CSV unless noted):
#   <set>.csv.gz               time, status and the numeric design matrix (model.matrix:
#                              factors as treatment dummies) that both R and Python models see
#   <set>_splits.csv.gz        20 columns split_01..split_20, 1 = training row, 0 = test row
#   r_predictions_<set>_cause<k>.csv.gz
#                              split, model (csc/fgr), row (0-based row of <set>), risk_<h> =
#                              predicted cumulative incidence of cause k by h months, at
#                              cause k's horizons
#   datasets.csv (plain)       per set: n, events per cause, cause labels, each cause's
#                              horizons, the grid, splits and seed, source and licence
#   r_versions.txt (plain)     R and package versions
#
# Run from the repository root (under a minute):    Rscript benchmarks/real_data/export_and_fit_r.R
# or for some sets only:                          Rscript benchmarks/real_data/export_and_fit_r.R pbc mgus2
suppressPackageStartupMessages({
  library(survival)
  library(riskRegression)
  library(prodlim)
})

DAYS_PER_MONTH <- 365.25 / 12
N_SPLITS <- 20
TRAIN_SHARE <- 0.7
SEED <- 20240
HORIZON_QUANTILES <- c(0.25, 0.5, 0.75)
GRID_STEP_MONTHS <- 1
CAUSES <- c(1, 2)
SIGNIFICANT_DIGITS <- 6
here <- "benchmarks/real_data"
data_dir <- file.path(here, "data")
dir.create(data_dir, showWarnings = FALSE, recursive = TRUE)

design <- function(df, formula) {
  mm <- model.matrix(formula, data = df)[, -1, drop = FALSE]
  colnames(mm) <- make.names(colnames(mm))
  as.data.frame(mm)
}

colon_cr <- function() {
  col <- survival::colon
  rec <- col[col$etype == 1, ]
  dth <- col[col$etype == 2, ]
  stopifnot(all(rec$id == dth$id))
  status <- ifelse(rec$status == 1, 1, ifelse(dth$status == 1, 2, 0))
  time <- ifelse(rec$status == 1, rec$time, dth$time)
  base <- rec[, c("rx", "sex", "age", "obstruct", "perfor", "adhere", "nodes", "differ",
                  "extent", "surg", "node4")]
  keep <- complete.cases(base)
  base <- base[keep, ]
  X <- design(base, ~ rx + sex + age + obstruct + perfor + adhere + nodes + differ + extent +
                surg + node4)
  data.frame(time = time[keep] / DAYS_PER_MONTH, status = status[keep], X)
}

melanoma_cr <- function() {
  data("Melanoma", package = "riskRegression", envir = environment())
  m <- Melanoma
  # invasion (levels 0-2) and ici (0-3) enter as ordinal scores: as dummies, some level has no
  # death from other causes in some training splits (14 such deaths in all), the cause-2 Cox
  # fit diverges, and CSC then predicts negative cumulative incidences.
  m$invasion <- as.numeric(m$invasion) - 1
  m$ici <- as.numeric(as.character(m$ici))
  X <- design(m, ~ sex + age + logthick + ulcer + invasion + epicel + ici)
  data.frame(time = m$time / DAYS_PER_MONTH, status = m$status, X)
}

pbc_cr <- function() {
  p <- survival::pbc
  p <- p[!is.na(p$protime), ]
  # pbc's status: 0 censored, 1 transplant, 2 dead. Here death is cause 1, transplant cause 2.
  status <- c(0, 2, 1)[p$status + 1]
  p$log_bili <- log(p$bili)
  p$log_albumin <- log(p$albumin)
  p$log_protime <- log(p$protime)
  X <- design(p, ~ age + sex + edema + log_bili + log_albumin + log_protime)
  stopifnot(!anyNA(X))
  data.frame(time = p$time / DAYS_PER_MONTH, status = status, X)
}

mgus2_cr <- function() {
  m <- survival::mgus2
  m <- m[complete.cases(m[, c("age", "sex", "hgb", "creat", "mspike")]), ]
  status <- ifelse(m$pstat == 1, 1, ifelse(m$death == 1, 2, 0))
  time <- ifelse(m$pstat == 1, m$ptime, m$futime)  # months already
  X <- design(m, ~ age + sex + hgb + creat + mspike)
  data.frame(time = time, status = status, X)
}

DATASETS <- list(
  colon = list(build = colon_cr, cause1 = "recurrence", cause2 = "death without recurrence",
               source = "survival::colon", licence = "LGPL (>= 2)"),
  melanoma = list(build = melanoma_cr, cause1 = "death from melanoma",
                  cause2 = "death from other causes", source = "riskRegression::Melanoma",
                  licence = "GPL (>= 2)"),
  pbc = list(build = pbc_cr, cause1 = "death", cause2 = "liver transplantation",
             source = "survival::pbc", licence = "LGPL (>= 2)"),
  mgus2 = list(build = mgus2_cr, cause1 = "plasma cell malignancy",
               cause2 = "death without plasma cell malignancy", source = "survival::mgus2",
               licence = "LGPL (>= 2)")
)

horizons_of <- function(d, cause) {
  h <- round(unname(quantile(d$time[d$status == cause], HORIZON_QUANTILES)))
  stopifnot(!anyDuplicated(h), all(h >= GRID_STEP_MONTHS))
  h
}

make_splits <- function(n) {
  set.seed(SEED)
  s <- sapply(seq_len(N_SPLITS), function(i) {
    tr <- integer(n)
    tr[sample.int(n, round(TRAIN_SHARE * n))] <- 1L
    tr
  })
  colnames(s) <- sprintf("split_%02d", seq_len(N_SPLITS))
  s
}

fit_predict <- function(name, d, splits, by_cause) {
  covs <- setdiff(names(d), c("time", "status"))
  f <- as.formula(paste("Hist(time, status) ~", paste(covs, collapse = " + ")))
  out <- lapply(CAUSES, function(k) list())
  for (s in seq_len(ncol(splits))) {
    train <- d[splits[, s] == 1, ]
    test <- d[splits[, s] == 0, ]
    rows <- which(splits[, s] == 0) - 1L  # 0-based rows for Python
    csc <- CSC(f, data = train)
    for (k in CAUSES) {
      h <- by_cause[[k]]
      fgr <- tryCatch(FGR(f, data = train, cause = k), error = function(e) {
        message(name, " split ", s, " cause ", k, ": FGR failed: ", conditionMessage(e))
        NULL
      })
      preds <- list(
        csc = predictRisk(csc, newdata = test, times = h, cause = k),
        fgr = if (is.null(fgr)) matrix(NA_real_, nrow(test), length(h))
              else predictRisk(fgr, newdata = test, times = h)
      )
      for (model in names(preds)) {
        p <- signif(preds[[model]], SIGNIFICANT_DIGITS)
        colnames(p) <- paste0("risk_", h)
        out[[k]][[length(out[[k]]) + 1]] <- data.frame(split = s, model = model, row = rows, p)
      }
    }
    cat(name, "split", s, "done\n")
  }
  lapply(out, function(o) do.call(rbind, o))
}

write_gz <- function(df, path) {
  tmp <- paste0(path, ".tmp")
  gz <- gzfile(tmp, "w")
  write.csv(df, gz, row.names = FALSE)
  close(gz)
  file.rename(tmp, path)
}

args <- commandArgs(trailingOnly = TRUE)
chosen <- if (length(args)) args else names(DATASETS)
unknown <- setdiff(chosen, names(DATASETS))
if (length(unknown)) stop("unknown data set(s): ", paste(unknown, collapse = ", "),
                          "; known: ", paste(names(DATASETS), collapse = ", "))

meta_path <- file.path(data_dir, "datasets.csv")
meta <- if (file.exists(meta_path)) read.csv(meta_path, stringsAsFactors = FALSE) else NULL
for (name in chosen) {
  spec <- DATASETS[[name]]
  d <- spec$build()
  stopifnot(!anyNA(d), all(d$time > 0), all(d$status %in% c(0, CAUSES)))
  by_cause <- lapply(CAUSES, function(k) horizons_of(d, k))
  splits <- make_splits(nrow(d))
  counts <- table(factor(d$status, levels = c(0, CAUSES)))
  cat(name, ": n =", nrow(d), " censored/cause 1/cause 2 =", paste(counts, collapse = "/"),
      " horizons (months):", paste(sapply(by_cause, paste, collapse = ","), collapse = " / "),
      "\n")
  preds <- fit_predict(name, d, splits, by_cause)
  write_gz(d, file.path(data_dir, paste0(name, ".csv.gz")))
  write_gz(as.data.frame(splits), file.path(data_dir, paste0(name, "_splits.csv.gz")))
  for (k in CAUSES) {
    write_gz(preds[[k]], file.path(data_dir, sprintf("r_predictions_%s_cause%d.csv.gz", name, k)))
  }
  row <- data.frame(
    dataset = name, n = nrow(d), n_censored = counts[["0"]], n_cause1 = counts[["1"]],
    n_cause2 = counts[["2"]], cause1 = spec$cause1, cause2 = spec$cause2,
    horizons_cause1 = paste(by_cause[[1]], collapse = ";"),
    horizons_cause2 = paste(by_cause[[2]], collapse = ";"),
    grid_max_months = GRID_STEP_MONTHS * ceiling(max(unlist(by_cause)) / GRID_STEP_MONTHS),
    grid_step_months = GRID_STEP_MONTHS, n_splits = N_SPLITS, train_share = TRAIN_SHARE,
    seed = SEED, source = spec$source, licence = spec$licence, stringsAsFactors = FALSE
  )
  if (!is.null(meta)) meta <- meta[meta$dataset != name, , drop = FALSE]
  meta <- rbind(meta, row)
}
meta <- meta[order(match(meta$dataset, names(DATASETS))), ]
write.csv(meta, meta_path, row.names = FALSE)
writeLines(c(R.version.string,
             paste("survival", packageVersion("survival")),
             paste("riskRegression", packageVersion("riskRegression")),
             paste("prodlim", packageVersion("prodlim")),
             paste("cmprsk", packageVersion("cmprsk"))),
           file.path(data_dir, "r_versions.txt"))
