output "prometheus_url" {
  description = "In-cluster Prometheus URL (stacks/ray passes it to the Ray dashboard)."
  value       = module.addons.prometheus_url
}

output "grafana_url" {
  description = "In-cluster Grafana URL."
  value       = module.addons.grafana_url
}

output "grafana_port_forward_command" {
  description = "Reach Grafana on http://localhost:3000."
  value       = module.addons.grafana_port_forward_command
}

output "grafana_admin_password_command" {
  description = "Prints Grafana's generated admin password."
  value       = module.addons.grafana_admin_secret == null ? null : "kubectl -n ${split("/", module.addons.grafana_admin_secret)[0]} get secret ${split("/", module.addons.grafana_admin_secret)[1]} -o jsonpath='{.data.admin-password}' | base64 -d"
}

output "ray_stack_inputs" {
  description = "Monitoring inputs of stacks/ray: terraform output -json ray_stack_inputs > ../ray/addons.auto.tfvars.json"
  value = {
    prometheus_url = module.addons.prometheus_url
    grafana_url    = module.addons.grafana_url
  }
}
