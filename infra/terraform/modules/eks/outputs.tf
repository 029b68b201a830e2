output "cluster_name" {
  description = "Name of the EKS cluster."
  value       = aws_eks_cluster.this.name
}

output "cluster_arn" {
  description = "ARN of the EKS cluster."
  value       = aws_eks_cluster.this.arn
}

output "cluster_endpoint" {
  description = "URL of the Kubernetes API server."
  value       = aws_eks_cluster.this.endpoint
}

output "cluster_certificate_authority_data" {
  description = "Base64 CA certificate of the Kubernetes API server."
  value       = aws_eks_cluster.this.certificate_authority[0].data
}

output "cluster_security_group_id" {
  description = "Security group EKS created for the control plane and the managed nodes."
  value       = aws_eks_cluster.this.vpc_config[0].cluster_security_group_id
}

output "kubernetes_version" {
  description = "Kubernetes version of the control plane."
  value       = aws_eks_cluster.this.version
}

output "oidc_provider_arn" {
  description = "ARN of the IAM OIDC provider for IRSA."
  value       = aws_iam_openid_connect_provider.this.arn
}

output "oidc_issuer_url" {
  description = "OIDC issuer URL of the cluster (https://...)."
  value       = aws_eks_cluster.this.identity[0].oidc[0].issuer
}

output "node_role_arn" {
  description = "IAM role of all node groups."
  value       = aws_iam_role.node.arn
}

output "gpu_node_groups" {
  description = "GPU node groups by name: node group name, capacity type, instance types and the node label value (redraft.dev/gpu-group) to select them."
  value = { for name, g in aws_eks_node_group.gpu : name => {
    node_group_name = g.node_group_name
    capacity_type   = g.capacity_type
    instance_types  = g.instance_types
    node_selector   = { "redraft.dev/gpu-group" = name }
  } }
}

output "cluster_autoscaler_role_arn" {
  description = "IAM role for the cluster autoscaler's service account (eks.amazonaws.com/role-arn annotation)."
  value       = aws_iam_role.cluster_autoscaler.arn
}
