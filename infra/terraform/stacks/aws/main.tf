# Everything on the AWS side: VPC (or an existing one), EKS with CPU and GPU node groups, and the
# S3 buckets plus the IAM roles of the Ray pods. Uses only the hashicorp/aws provider.

module "network" {
  source = "../../modules/network"
  count  = var.existing_vpc == null ? 1 : 0

  name               = var.name
  cluster_name       = var.name
  vpc_cidr           = var.vpc_cidr
  availability_zones = coalesce(var.availability_zones, [for s in ["a", "b", "c"] : "${var.region}${s}"])
  single_nat_gateway = var.single_nat_gateway
}

locals {
  vpc_id             = var.existing_vpc == null ? module.network[0].vpc_id : var.existing_vpc.vpc_id
  vpc_cidr           = var.existing_vpc == null ? module.network[0].vpc_cidr : var.existing_vpc.vpc_cidr
  private_subnet_ids = var.existing_vpc == null ? module.network[0].private_subnet_ids : var.existing_vpc.private_subnet_ids
}

module "eks" {
  source = "../../modules/eks"

  cluster_name           = var.name
  kubernetes_version     = var.kubernetes_version
  subnet_ids             = local.private_subnet_ids
  endpoint_public_access = var.endpoint_public_access
  public_access_cidrs    = var.public_access_cidrs
  admin_principal_arns   = var.admin_principal_arns
  system_node_group      = var.system_node_group
  gpu_node_groups        = var.gpu_node_groups
}

module "storage" {
  source = "../../modules/storage"

  name_prefix                        = var.bucket_prefix
  oidc_provider_arn                  = module.eks.oidc_provider_arn
  oidc_issuer_url                    = module.eks.oidc_issuer_url
  namespace                          = var.namespace
  job_service_account                = var.job_service_account
  serve_service_account              = var.serve_service_account
  checkpoint_expiration_days         = var.checkpoint_expiration_days
  noncurrent_version_expiration_days = var.noncurrent_version_expiration_days
  force_destroy                      = var.force_destroy_buckets
}
