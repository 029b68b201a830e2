output "bucket_names" {
  description = "Data bucket names by role: corpus, outputs, checkpoints."
  value       = { for k, b in aws_s3_bucket.data : k => b.bucket }
}

output "bucket_arns" {
  description = "Data bucket ARNs by role: corpus, outputs, checkpoints."
  value       = { for k, b in aws_s3_bucket.data : k => b.arn }
}

output "access_log_bucket_name" {
  description = "Bucket receiving S3 server access logs of the data buckets (one prefix per bucket)."
  value       = aws_s3_bucket.logs.bucket
}

output "kms_key_arn" {
  description = "ARN of the KMS key that encrypts the data buckets."
  value       = aws_kms_key.buckets.arn
}

output "job_role_arn" {
  description = "IAM role for the nightly job's Ray pods; annotate the job service account with it (eks.amazonaws.com/role-arn)."
  value       = aws_iam_role.ray["job"].arn
}

output "serve_role_arn" {
  description = "IAM role for the Serve cluster's Ray pods; annotate the serve service account with it (eks.amazonaws.com/role-arn)."
  value       = aws_iam_role.ray["serve"].arn
}

output "prefixes" {
  description = "Key prefixes the roles are scoped to: outputs (outputs bucket), checkpoints and models (checkpoints bucket)."
  value = {
    outputs     = var.outputs_prefix
    checkpoints = var.checkpoints_prefix
    models      = var.models_prefix
  }
}

output "s3_uris" {
  description = "Ready-to-use S3 URIs for job configs: corpus root, outputs root, checkpoints root and models root."
  value = {
    corpus      = "s3://${aws_s3_bucket.data["corpus"].bucket}/"
    outputs     = "s3://${aws_s3_bucket.data["outputs"].bucket}/${var.outputs_prefix}"
    checkpoints = "s3://${aws_s3_bucket.data["checkpoints"].bucket}/${var.checkpoints_prefix}"
    models      = "s3://${aws_s3_bucket.data["checkpoints"].bucket}/${var.models_prefix}"
  }
}
