output "region" {
  description = "AWS region."
  value       = var.region
}

output "cluster_name" {
  description = "Name of the EKS cluster."
  value       = module.eks.cluster_name
}

output "vpc_id" {
  description = "ID of the VPC the cluster runs in."
  value       = local.vpc_id
}

output "update_kubeconfig_command" {
  description = "Adds the cluster to your kubeconfig."
  value       = "aws eks update-kubeconfig --region ${var.region} --name ${module.eks.cluster_name}"
}

output "bucket_names" {
  description = "Data buckets: corpus, outputs, checkpoints."
  value       = module.storage.bucket_names
}

output "s3_uris" {
  description = "S3 URIs to use in job configs: corpus, outputs, checkpoints (resume state) and models (weights)."
  value       = module.storage.s3_uris
}

output "job_role_arn" {
  description = "IAM role of the nightly job's Ray pods."
  value       = module.storage.job_role_arn
}

output "serve_role_arn" {
  description = "IAM role of the Serve cluster's Ray pods."
  value       = module.storage.serve_role_arn
}

output "gpu_node_groups" {
  description = "GPU node groups (name, capacity type, instance types, node selector)."
  value       = module.eks.gpu_node_groups
}

output "addons_stack_inputs" {
  description = "Inputs of stacks/addons: terraform output -json addons_stack_inputs > ../addons/aws.auto.tfvars.json"
  value = {
    region                      = var.region
    cluster_name                = module.eks.cluster_name
    kubernetes_version          = var.kubernetes_version
    cluster_autoscaler_role_arn = module.eks.cluster_autoscaler_role_arn
  }
}

output "ray_stack_inputs" {
  description = "Inputs of stacks/ray: terraform output -json ray_stack_inputs > ../ray/aws.auto.tfvars.json"
  value = {
    region                = var.region
    cluster_name          = module.eks.cluster_name
    vpc_cidr              = local.vpc_cidr
    namespace             = var.namespace
    job_service_account   = var.job_service_account
    serve_service_account = var.serve_service_account
    job_role_arn          = module.storage.job_role_arn
    serve_role_arn        = module.storage.serve_role_arn
    s3_uris               = module.storage.s3_uris
    gpu_node_groups       = keys(var.gpu_node_groups)
  }
}
