terraform {
  required_version = ">= 1.9"

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.80, < 6.0"
    }
  }

  # State is local by default. For a team, keep it in S3 instead: copy backend.tf.example to
  # backend.tf, fill it in, and run `terraform init -migrate-state`.
}

provider "aws" {
  region = var.region

  default_tags {
    tags = merge(var.tags, {
      "redraft/stack" = "aws"
    })
  }
}
