# S3 buckets for redraft (corpus, outputs, checkpoints) plus their access-log bucket and KMS key,
# and the least-privilege IAM roles that the Ray pods assume through IRSA.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition

  # Data buckets and what their lifecycle rules do beyond the shared ones.
  buckets = {
    corpus      = "${var.name_prefix}-corpus"
    outputs     = "${var.name_prefix}-outputs"
    checkpoints = "${var.name_prefix}-checkpoints"
  }
  log_bucket = "${var.name_prefix}-access-logs"

  bucket_arns = { for k, name in local.buckets : k => "arn:${local.partition}:s3:::${name}" }

  # IRSA condition keys use the issuer without its scheme.
  oidc_issuer = trimprefix(var.oidc_issuer_url, "https://")

  tags = merge(var.tags, { "app.kubernetes.io/part-of" = "redraft" })
}

################################################################################
# KMS key for the data buckets
################################################################################

data "aws_iam_policy_document" "kms" {
  #checkov:skip=CKV_AWS_109:Key policy, not an IAM identity policy: Resource "*" in a key policy means this key only, and the account-root statement is the AWS default that keeps the key manageable.
  #checkov:skip=CKV_AWS_111:Key policy, not an IAM identity policy: Resource "*" means this key only; the only principal is the account root (the AWS default key policy).
  #checkov:skip=CKV_AWS_356:Key policy, not an IAM identity policy: AWS requires Resource "*" in key policies, where it means this key only.
  # The account root keeps administrative control, which is what lets IAM policies (such as the
  # Ray pod roles below) grant use of the key; without it the key becomes unmanageable.
  statement {
    sid       = "AccountAdministration"
    effect    = "Allow"
    actions   = ["kms:*"]
    resources = ["*"] # In a key policy "*" means this key.

    principals {
      type        = "AWS"
      identifiers = ["arn:${local.partition}:iam::${local.account_id}:root"]
    }
  }
}

resource "aws_kms_key" "buckets" {
  description             = "redraft ${var.name_prefix}: S3 bucket encryption"
  enable_key_rotation     = true
  deletion_window_in_days = var.kms_deletion_window_days
  policy                  = data.aws_iam_policy_document.kms.json
  tags                    = local.tags
}

resource "aws_kms_alias" "buckets" {
  name          = "alias/${var.name_prefix}-s3"
  target_key_id = aws_kms_key.buckets.key_id
}

################################################################################
# Access-log bucket (target of S3 server access logging for the data buckets)
################################################################################

resource "aws_s3_bucket" "logs" {
  #checkov:skip=CKV_AWS_18:This is the access-log target; logging it into itself would log its own log deliveries forever.
  #checkov:skip=CKV_AWS_145:S3 server access log delivery only supports SSE-S3 on the target bucket, not SSE-KMS.
  #checkov:skip=CKV_AWS_144:Access logs are audit data kept in-region; cross-region replication would double cost for no recovery need.
  #checkov:skip=CKV2_AWS_62:Nothing consumes events for access-log objects; notifications would be unused.
  bucket        = local.log_bucket
  force_destroy = var.force_destroy
  tags          = merge(local.tags, { "redraft/bucket-role" = "access-logs" })
}

resource "aws_s3_bucket_ownership_controls" "logs" {
  bucket = aws_s3_bucket.logs.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "logs" {
  bucket                  = aws_s3_bucket.logs.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "logs" {
  bucket = aws_s3_bucket.logs.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm = "AES256"
    }
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "logs" {
  bucket = aws_s3_bucket.logs.id

  rule {
    id     = "expire-access-logs"
    status = "Enabled"
    filter {}
    expiration {
      days = var.access_log_retention_days
    }
    noncurrent_version_expiration {
      noncurrent_days = 1
    }
    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_incomplete_multipart_upload_days
    }
  }

  depends_on = [aws_s3_bucket_versioning.logs]
}

data "aws_iam_policy_document" "logs" {
  statement {
    sid       = "S3ServerAccessLogDelivery"
    effect    = "Allow"
    actions   = ["s3:PutObject"]
    resources = ["${aws_s3_bucket.logs.arn}/*"]

    principals {
      type        = "Service"
      identifiers = ["logging.s3.amazonaws.com"]
    }

    condition {
      test     = "ArnLike"
      variable = "aws:SourceArn"
      values   = values(local.bucket_arns)
    }

    condition {
      test     = "StringEquals"
      variable = "aws:SourceAccount"
      values   = [local.account_id]
    }
  }

  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      aws_s3_bucket.logs.arn,
      "${aws_s3_bucket.logs.arn}/*",
    ]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "logs" {
  bucket = aws_s3_bucket.logs.id
  policy = data.aws_iam_policy_document.logs.json

  depends_on = [aws_s3_bucket_public_access_block.logs]
}

################################################################################
# Data buckets
################################################################################

resource "aws_s3_bucket" "data" {
  #checkov:skip=CKV_AWS_144:Outputs and job checkpoints can be regenerated from the corpus; cross-region replication is a per-deployment choice, not a default (it doubles storage cost).
  #checkov:skip=CKV2_AWS_62:redraft polls S3 from Ray jobs and runs on a schedule; no consumer exists for bucket event notifications.
  for_each = local.buckets

  bucket        = each.value
  force_destroy = var.force_destroy
  tags          = merge(local.tags, { "redraft/bucket-role" = each.key })
}

resource "aws_s3_bucket_ownership_controls" "data" {
  for_each = aws_s3_bucket.data

  bucket = each.value.id
  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_public_access_block" "data" {
  for_each = aws_s3_bucket.data

  bucket                  = each.value.id
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_versioning" "data" {
  for_each = aws_s3_bucket.data

  bucket = each.value.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "data" {
  for_each = aws_s3_bucket.data

  bucket = each.value.id
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.buckets.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_logging" "data" {
  for_each = aws_s3_bucket.data

  bucket        = each.value.id
  target_bucket = aws_s3_bucket.logs.id
  target_prefix = "${each.key}/"

  depends_on = [aws_s3_bucket_policy.logs]
}

resource "aws_s3_bucket_lifecycle_configuration" "data" {
  for_each = aws_s3_bucket.data

  bucket = each.value.id

  # Shared by every data bucket: clean up failed uploads and old versions.
  rule {
    id     = "abort-incomplete-uploads-and-expire-old-versions"
    status = "Enabled"
    filter {}
    abort_incomplete_multipart_upload {
      days_after_initiation = var.abort_incomplete_multipart_upload_days
    }
    noncurrent_version_expiration {
      noncurrent_days = var.noncurrent_version_expiration_days
    }
  }

  # Finished outputs are read rarely after the first month.
  dynamic "rule" {
    for_each = each.key == "outputs" ? [var.outputs_prefix] : []
    content {
      id     = "outputs-to-infrequent-access"
      status = "Enabled"
      filter {
        prefix = rule.value
      }
      transition {
        days          = var.outputs_infrequent_access_days
        storage_class = "STANDARD_IA"
      }
    }
  }

  # Resume state is only useful while a job may still be retried; model weights never expire.
  dynamic "rule" {
    for_each = each.key == "checkpoints" ? [var.checkpoints_prefix] : []
    content {
      id     = "expire-job-resume-state"
      status = "Enabled"
      filter {
        prefix = rule.value
      }
      expiration {
        days = var.checkpoint_expiration_days
      }
    }
  }

  depends_on = [aws_s3_bucket_versioning.data]
}

data "aws_iam_policy_document" "data_bucket" {
  for_each = aws_s3_bucket.data

  statement {
    sid     = "DenyInsecureTransport"
    effect  = "Deny"
    actions = ["s3:*"]
    resources = [
      each.value.arn,
      "${each.value.arn}/*",
    ]

    principals {
      type        = "*"
      identifiers = ["*"]
    }

    condition {
      test     = "Bool"
      variable = "aws:SecureTransport"
      values   = ["false"]
    }
  }
}

resource "aws_s3_bucket_policy" "data" {
  for_each = aws_s3_bucket.data

  bucket = each.value.id
  policy = data.aws_iam_policy_document.data_bucket[each.key].json

  depends_on = [aws_s3_bucket_public_access_block.data]
}

################################################################################
# IAM roles for the Ray pods (IRSA)
################################################################################

data "aws_iam_policy_document" "assume" {
  for_each = {
    job   = var.job_service_account
    serve = var.serve_service_account
  }

  statement {
    sid     = "AssumeFromServiceAccount"
    effect  = "Allow"
    actions = ["sts:AssumeRoleWithWebIdentity"]

    principals {
      type        = "Federated"
      identifiers = [var.oidc_provider_arn]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:sub"
      values   = ["system:serviceaccount:${var.namespace}:${each.value}"]
    }

    condition {
      test     = "StringEquals"
      variable = "${local.oidc_issuer}:aud"
      values   = ["sts.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "ray" {
  for_each = data.aws_iam_policy_document.assume

  name                 = "${var.name_prefix}-ray-${each.key}"
  description          = "redraft Ray ${each.key} pods (service account ${var.namespace}/${each.key == "job" ? var.job_service_account : var.serve_service_account})"
  assume_role_policy   = each.value.json
  max_session_duration = 3600
  tags                 = local.tags
}

locals {
  object_rw_actions = [
    "s3:GetObject",
    "s3:PutObject",
    "s3:DeleteObject",
    "s3:AbortMultipartUpload",
    "s3:ListMultipartUploadParts",
  ]

  kms_via_s3 = "s3.${data.aws_region.current.name}.amazonaws.com"
}

# The nightly job: read the whole corpus, read and write outputs/ and checkpoints/, read models/.
data "aws_iam_policy_document" "job" {
  statement {
    sid       = "LocateBuckets"
    effect    = "Allow"
    actions   = ["s3:GetBucketLocation"]
    resources = values(local.bucket_arns)
  }

  statement {
    sid       = "ListCorpus"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arns.corpus]
  }

  statement {
    sid       = "ReadCorpus"
    effect    = "Allow"
    actions   = ["s3:GetObject"]
    resources = ["${local.bucket_arns.corpus}/*"]
  }

  statement {
    sid       = "ListOutputsPrefix"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arns.outputs]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = [trimsuffix(var.outputs_prefix, "/"), "${var.outputs_prefix}*"]
    }
  }

  statement {
    sid       = "ReadWriteOutputs"
    effect    = "Allow"
    actions   = local.object_rw_actions
    resources = ["${local.bucket_arns.outputs}/${var.outputs_prefix}*"]
  }

  statement {
    sid       = "ListCheckpointAndModelPrefixes"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arns.checkpoints]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values = [
        trimsuffix(var.checkpoints_prefix, "/"), "${var.checkpoints_prefix}*",
        trimsuffix(var.models_prefix, "/"), "${var.models_prefix}*",
      ]
    }
  }

  statement {
    sid       = "ReadWriteCheckpoints"
    effect    = "Allow"
    actions   = local.object_rw_actions
    resources = ["${local.bucket_arns.checkpoints}/${var.checkpoints_prefix}*"]
  }

  statement {
    sid       = "ReadModels"
    effect    = "Allow"
    actions   = ["s3:GetObject"]
    resources = ["${local.bucket_arns.checkpoints}/${var.models_prefix}*"]
  }

  statement {
    sid       = "UseBucketKeyThroughS3"
    effect    = "Allow"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey"]
    resources = [aws_kms_key.buckets.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = [local.kms_via_s3]
    }
  }
}

# The Serve cluster: read model weights, nothing else.
data "aws_iam_policy_document" "serve" {
  statement {
    sid       = "LocateBucket"
    effect    = "Allow"
    actions   = ["s3:GetBucketLocation"]
    resources = [local.bucket_arns.checkpoints]
  }

  statement {
    sid       = "ListModelPrefix"
    effect    = "Allow"
    actions   = ["s3:ListBucket"]
    resources = [local.bucket_arns.checkpoints]

    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = [trimsuffix(var.models_prefix, "/"), "${var.models_prefix}*"]
    }
  }

  statement {
    sid       = "ReadModels"
    effect    = "Allow"
    actions   = ["s3:GetObject"]
    resources = ["${local.bucket_arns.checkpoints}/${var.models_prefix}*"]
  }

  statement {
    sid       = "DecryptThroughS3"
    effect    = "Allow"
    actions   = ["kms:Decrypt"]
    resources = [aws_kms_key.buckets.arn]

    condition {
      test     = "StringEquals"
      variable = "kms:ViaService"
      values   = [local.kms_via_s3]
    }
  }
}

resource "aws_iam_role_policy" "ray" {
  for_each = aws_iam_role.ray

  name   = "redraft-s3-${each.key}"
  role   = each.value.id
  policy = each.key == "job" ? data.aws_iam_policy_document.job.json : data.aws_iam_policy_document.serve.json
}
