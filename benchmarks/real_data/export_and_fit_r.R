# Real competing-risk data for the forest benchmark (issue 4, part 5): export + R models.
#
# Exports two public data sets that ship with Debian's R packages to CSV, with 20 seeded 70/30
# train/test splits, fits riskRegression's cause-specific Cox (CSC) and Fine-Gray (FGR) models on
# every training split and writes their predicted cumulative incidences on the test split.
# The Python side (score_real_data.py) fits CompetingRiskForest on the same splits and scores all
# models with the same metric code (training/metrics.py).
#
# Data sets (licences: survival is LGPL (>= 2), riskRegression GPL (>= 2); both data sets are
# public study data distributed with those packages):
# - survival::colon (adjuvant chemotherapy trial, Moertel et al. 1990). Two rows per patient:
#   etype 1 = recurrence, etype 2 = death. Competing-risks outcome built here:
#   status 1 = recurrence, at the recurrence time; status 2 = death without recurrence, at the
#   death time; status 0 = censored at the last follow-up (the etype-2 row's time). Deaths after
#   a recurrence are not events (the recurrence came first). Rows with missing covariates
#   (nodes, differ) are dropped.
# - riskRegression::Melanoma (Andersen et al. 1993): status 1 = death from melanoma,
#   2 = death from other causes, 0 = censored. Covariates: sex, age, log thickness, ulceration,
#   epithelioid cells, and invasion level and ici as ordinal scores (see melanoma_cr).
# Times: days -> months (/ (365.25 / 12)). Covariates are exported as the numeric design matrix
# (model.matrix: factors as treatment dummies) so that R and Python models see the same columns.
#
# Run from the repository root:  Rscript benchmarks/real_data/export_and_fit_r.R
suppressPackageStartupMessages({
  library(survival)
  library(riskRegression)
  library(prodlim)
})

DAYS_PER_MONTH <- 365.25 / 12
N_SPLITS <- 20
TRAIN_SHARE <- 0.7
SEED <- 20240
HORIZONS <- c(12, 24, 36, 60)  # months: 1, 2, 3 and 5 years, within both follow-ups
CAUSES <- c(1, 2)
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

make_splits <- function(n) {
  set.seed(SEED)
  sapply(seq_len(N_SPLITS), function(s) {
    tr <- integer(n)
    tr[sample.int(n, round(TRAIN_SHARE * n))] <- 1L
    tr
  })
}

fit_predict <- function(name, d, splits) {
  covs <- setdiff(names(d), c("time", "status"))
  f <- as.formula(paste("Hist(time, status) ~", paste(covs, collapse = " + ")))
  out <- list()
  for (s in seq_len(ncol(splits))) {
    train <- d[splits[, s] == 1, ]
    test <- d[splits[, s] == 0, ]
    rows <- which(splits[, s] == 0) - 1L  # 0-based rows for Python
    csc <- CSC(f, data = train)
    for (k in CAUSES) {
      fgr <- tryCatch(FGR(f, data = train, cause = k), error = function(e) NULL)
      preds <- list(
        csc = predictRisk(csc, newdata = test, times = HORIZONS, cause = k),
        fgr = if (is.null(fgr)) matrix(NA_real_, nrow(test), length(HORIZONS))
              else predictRisk(fgr, newdata = test, times = HORIZONS)
      )
      for (model in names(preds)) {
        p <- signif(preds[[model]], 6)
        colnames(p) <- paste0("risk_", HORIZONS)
        out[[length(out) + 1]] <- data.frame(dataset = name, split = s, cause = k,
                                             model = model, row = rows, p)
      }
    }
    cat(name, "split", s, "done\n")
  }
  do.call(rbind, out)
}

sets <- list(colon = colon_cr(), melanoma = melanoma_cr())
all_preds <- list()
for (name in names(sets)) {
  d <- sets[[name]]
  splits <- make_splits(nrow(d))
  colnames(splits) <- sprintf("split_%02d", seq_len(N_SPLITS))
  write.csv(d, file.path(data_dir, paste0(name, ".csv")), row.names = FALSE)
  write.csv(splits, file.path(data_dir, paste0(name, "_splits.csv")), row.names = FALSE)
  cat(name, ": n =", nrow(d), " events:", paste(names(table(d$status)), table(d$status),
      sep = "=", collapse = " "), "\n")
  all_preds[[name]] <- fit_predict(name, d, splits)
}
gz <- gzfile(file.path(data_dir, "r_predictions.csv.gz"), "w")
write.csv(do.call(rbind, all_preds), gz, row.names = FALSE)
close(gz)
writeLines(c(R.version.string,
             paste("survival", packageVersion("survival")),
             paste("riskRegression", packageVersion("riskRegression")),
             paste("prodlim", packageVersion("prodlim")),
             paste("cmprsk", packageVersion("cmprsk")),
             paste("horizons_months", paste(HORIZONS, collapse = ","))),
           file.path(data_dir, "r_versions.txt"))
